# Conan 2 recipe for lockstore, after Conan Center's header-only template.
# Conan is not installable on the project's build machines, so CI proves the
# CMake half instead: test_package/ is built against a `cmake --install`
# prefix (tests/consumers/run.sh). Components match the CMake targets:
# lockstore::lockstore, lockstore::sqlite, lockstore::store,
# lockstore::postgres, lockstore::redis.
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class LockstoreConan(ConanFile):
    name = "lockstore"
    description = "Distributed locks (leases) with fencing tokens and a durable session store for Boost.Asio C++20 coroutines"
    license = "BSL-1.0"
    topics = ("lock", "lease", "fencing", "asio", "coroutines", "sqlite", "postgresql", "redis", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "with_postgres": [True, False],
        "with_redis": [True, False],
    }
    default_options = {
        "with_postgres": False,
        "with_redis": False,
    }
    exports_sources = "include/*", "CMakeLists.txt", "cmake/*", "LICENSE*"
    no_copy_source = True

    def set_version(self):
        # The one place the version is set: project(VERSION) in CMakeLists.txt.
        cmake = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = re.search(r"project\(lockstore VERSION (\d+\.\d+\.\d+)", cmake).group(1)

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        self.requires("boost/[>=1.81 <2]", transitive_headers=True)
        self.requires("fmt/[>=9 <11]", transitive_headers=True)
        self.requires("sqlite3/[>=3.35 <4]", transitive_headers=True)
        self.requires("openssl/[>=3 <4]")
        if self.options.with_postgres:
            self.requires("libpq/[>=14 <17]", transitive_headers=True)
        if self.options.with_redis:
            self.requires("hiredis/[>=0.14 <2]", transitive_headers=True)

    def package_id(self):
        self.info.clear()

    def validate(self):
        check_min_cppstd(self, 20)

    def package(self):
        copy(self, "LICENSE_1_0.txt", src=self.source_folder, dst=os.path.join(self.package_folder, "licenses"))
        # The headers and their definitions (impl/*.ipp, included by them).
        for pattern in ("*.hpp", "*.ipp"):
            copy(self, pattern, src=os.path.join(self.source_folder, "include"),
                 dst=os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "lockstore")
        # The aggregate of every component has a name of its own: under the
        # name of the core it would pull SQLite and OpenSSL into programs
        # that link only the core, unlike the CMake package.
        self.cpp_info.set_property("cmake_target_name", "lockstore::all")

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "lockstore::lockstore")
        core.requires = ["boost::headers", "fmt::fmt"]
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]

        sqlite = self.cpp_info.components["sqlite"]
        sqlite.set_property("cmake_target_name", "lockstore::sqlite")
        sqlite.requires = ["core", "sqlite3::sqlite3"]

        store = self.cpp_info.components["store"]
        store.set_property("cmake_target_name", "lockstore::store")
        store.requires = ["sqlite", "openssl::crypto"]

        if self.options.with_postgres:
            postgres = self.cpp_info.components["postgres"]
            postgres.set_property("cmake_target_name", "lockstore::postgres")
            postgres.requires = ["core", "libpq::libpq"]
        if self.options.with_redis:
            redis = self.cpp_info.components["redis"]
            redis.set_property("cmake_target_name", "lockstore::redis")
            redis.requires = ["core", "hiredis::hiredis"]
