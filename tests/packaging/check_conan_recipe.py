#!/usr/bin/env python3
# Reads conanfile.py as Conan would, with Conan's few entry points it uses
# replaced by recorders (Conan itself cannot be installed on the build
# machines), and checks what the recipe declares: the components and their
# CMake targets match the CMake package's, the aggregate target is not the
# core's, each component requires only its own libraries, the server
# backends exist only with their options, and the package holds the
# headers, their impl/*.ipp definitions and the licence.
# Usage: check_conan_recipe.py [SOURCE_DIR]
import os
import sys
import tempfile
import types

source = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
copied = []


def stub(name, **members):
    module = types.ModuleType(name)
    module.__dict__.update(members)
    sys.modules[name] = module
    return module


class ConanFile:
    pass


def copy(conanfile, pattern, src, dst):
    copied.append((pattern, os.path.relpath(src, source), os.path.relpath(dst, conanfile.package_folder)))


def load(conanfile, path):
    with open(path) as text:
        return text.read()


stub("conan", ConanFile=ConanFile)
stub("conan.tools")
stub("conan.tools.build", check_min_cppstd=lambda conanfile, version: None)
stub("conan.tools.files", copy=copy, load=load)
stub("conan.tools.layout", basic_layout=lambda conanfile, src_folder=".": None)


class Component:
    def __init__(self):
        self.properties, self.requires, self.system_libs = {}, [], []
        self.bindirs, self.libdirs = None, None

    def set_property(self, name, value):
        self.properties[name] = value


class CppInfo(Component):
    def __init__(self):
        super().__init__()
        self.components = {}

    def component(self, name):
        return self.components.setdefault(name, Component())


class Components(dict):
    def __missing__(self, name):
        self[name] = Component()
        return self[name]


failures = []


def check(what, expected, actual):
    if expected == actual:
        print(f"ok: {what}")
    else:
        print(f"FAIL: {what}: expected {expected!r}, got {actual!r}")
        failures.append(what)


namespace = {}
with open(os.path.join(source, "conanfile.py")) as recipe:
    exec(compile(recipe.read(), "conanfile.py", "exec"), namespace)
Recipe = namespace["LockstoreConan"]

for postgres, redis in [(False, False), (True, True)]:
    conanfile = Recipe()
    conanfile.recipe_folder = source
    conanfile.source_folder = source
    conanfile.package_folder = tempfile.mkdtemp()
    conanfile.settings = types.SimpleNamespace(os="Linux")
    conanfile.options = types.SimpleNamespace(with_postgres=postgres, with_redis=redis)
    conanfile.cpp_info = CppInfo()
    conanfile.cpp_info.components = Components()
    conanfile.set_version()
    conanfile.package_info()
    info = conanfile.cpp_info
    components = info.components
    suffix = " (with_postgres, with_redis)" if postgres else ""

    expected = {"core": "lockstore::lockstore", "sqlite": "lockstore::sqlite", "store": "lockstore::store"}
    if postgres:
        expected["postgres"] = "lockstore::postgres"
    if redis:
        expected["redis"] = "lockstore::redis"
    check("components and their CMake targets" + suffix, expected,
          {name: component.properties.get("cmake_target_name") for name, component in components.items()})
    check("the aggregate target is not the core's" + suffix, True,
          info.properties.get("cmake_target_name") not in expected.values())
    check("the package is found as lockstore" + suffix, "lockstore", info.properties.get("cmake_file_name"))
    check("the core requires Boost and fmt only" + suffix, ["boost::headers", "fmt::fmt"], components["core"].requires)
    check("sqlite requires the core and SQLite" + suffix, ["core", "sqlite3::sqlite3"], components["sqlite"].requires)
    check("store requires sqlite and OpenSSL's crypto" + suffix, ["sqlite", "openssl::crypto"],
          components["store"].requires)
    if postgres:
        check("postgres requires the core and libpq", ["core", "libpq::libpq"], components["postgres"].requires)
    if redis:
        check("redis requires the core and hiredis", ["core", "hiredis::hiredis"], components["redis"].requires)

    with open(os.path.join(source, "CMakeLists.txt")) as cmake:
        version = cmake.read().split("project(lockstore VERSION ", 1)[1].split()[0]
    check("the version is CMakeLists.txt's" + suffix, version, conanfile.version)

copied.clear()
conanfile.package()
patterns = {pattern for pattern, _, _ in copied}
check("the package holds the headers, impl/*.ipp and the licence", {"*.hpp", "*.ipp", "LICENSE_1_0.txt"}, patterns)
check("the licence is declared", "BSL-1.0", Recipe.license)

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
