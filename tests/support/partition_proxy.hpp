// A TCP proxy on loopback for partition tests. It forwards between its
// clients and a server until blackhole(); from then on it neither reads nor
// forwards anything in either direction, and closes nothing, as a network
// that silently drops packets would: requests sit unanswered in the kernel's
// buffers. heal() resumes forwarding (what waited is then delivered late).
// New connections are accepted throughout, and joined to the server only
// while healed.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace lockstore::test {

class PartitionProxy {
 public:
  explicit PartitionProxy(std::uint16_t target_port) : target_port_(target_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener_ < 0) throw std::runtime_error("proxy: socket failed");
    const int yes = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in address = loopback(0);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listener_, 64) != 0)
      throw std::runtime_error("proxy: bind/listen failed");
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { loop(); });
  }

  ~PartitionProxy() {
    stop_ = true;
    thread_.join();
    for (const auto& pair : pairs_) {
      ::close(pair.client);
      if (pair.server >= 0) ::close(pair.server);
    }
    ::close(listener_);
  }

  PartitionProxy(const PartitionProxy&) = delete;
  PartitionProxy& operator=(const PartitionProxy&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  void blackhole() noexcept { blackholed_ = true; }
  void heal() noexcept { blackholed_ = false; }

 private:
  struct Pair {
    int client;
    int server;  // -1 until joined
  };

  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
  }

  int connect_target() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = loopback(target_port_);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
      const int yes = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
      return fd;
    }
    if (fd >= 0) ::close(fd);
    return -1;
  }

  // Moves what `from` has to `to`; false when either side is done.
  static bool pump(int from, int to) {
    char buffer[65536];
    const auto got = ::recv(from, buffer, sizeof buffer, 0);
    if (got <= 0) return false;
    for (ssize_t sent = 0; sent < got;) {
      const auto wrote = ::send(to, buffer + sent, static_cast<std::size_t>(got - sent), MSG_NOSIGNAL);
      if (wrote <= 0) return false;
      sent += wrote;
    }
    return true;
  }

  void loop() {
    while (!stop_) {
      const bool healed = !blackholed_;
      std::vector<pollfd> watched{{listener_, POLLIN, 0}};
      if (healed) {
        for (auto& pair : pairs_) {
          if (pair.server < 0) pair.server = connect_target();
          watched.push_back({pair.client, POLLIN, 0});
          watched.push_back({pair.server, POLLIN, 0});
        }
      }
      if (::poll(watched.data(), watched.size(), 5) <= 0) continue;
      if (watched[0].revents & POLLIN) {
        const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client >= 0) {
          const int yes = 1;
          ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
          pairs_.push_back({client, -1});
        }
      }
      if (!healed) continue;
      std::vector<std::size_t> finished;
      const std::size_t polled = (watched.size() - 1) / 2;  // a pair accepted just now waits for the next round
      for (std::size_t index = 0; index < polled; ++index) {
        const auto& client = watched[1 + 2 * index];
        const auto& server = watched[2 + 2 * index];
        bool alive = server.fd >= 0;  // a server that refused the join ends the pair
        if (alive && (client.revents & (POLLIN | POLLHUP | POLLERR))) alive = pump(client.fd, server.fd);
        if (alive && (server.revents & (POLLIN | POLLHUP | POLLERR))) alive = pump(server.fd, client.fd);
        if (!alive) finished.push_back(index);
      }
      for (auto it = finished.rbegin(); it != finished.rend(); ++it) {
        ::close(pairs_[*it].client);
        if (pairs_[*it].server >= 0) ::close(pairs_[*it].server);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
      }
    }
  }

  std::uint16_t target_port_;
  std::uint16_t port_ = 0;
  int listener_ = -1;
  std::vector<Pair> pairs_;  // the proxy thread's alone
  std::atomic<bool> blackholed_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace lockstore::test
