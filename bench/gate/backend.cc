// The benchmark's instance: a tiny keep-alive HTTP/1.1 server (epoll, one loop per thread on a
// SO_REUSEPORT socket) answering every request with a fixed 13-byte body. It reads request
// bodies framed by Content-Length and ignores them.
//   qufop_gate_bench_backend PORT [THREADS]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

struct Conn {
  std::string in;
  size_t body_left = 0;
};

int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) {
    std::perror("bind/listen");
    std::exit(1);
  }
  return fd;
}

size_t content_length(std::string_view head) {
  for (size_t pos = 0; (pos = head.find('\n', pos)) != std::string_view::npos;) {
    ++pos;
    if (head.size() - pos > 15 && strncasecmp(head.data() + pos, "content-length:", 15) == 0) {
      return std::strtoul(head.data() + pos + 15, nullptr, 10);
    }
  }
  return 0;
}

// Consumes whole requests from c.in; returns how many to answer.
int parse(Conn& c) {
  int answers = 0;
  while (true) {
    if (c.body_left > 0) {
      size_t take = std::min(c.body_left, c.in.size());
      c.in.erase(0, take);
      c.body_left -= take;
      if (c.body_left > 0) return answers;
    }
    size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) return answers;
    c.body_left = content_length(std::string_view(c.in).substr(0, end + 2));
    c.in.erase(0, end + 4);
    ++answers;
  }
}

void loop(int port) {
  int lfd = listen_on(port);
  int ep = epoll_create1(0);
  epoll_event ev{EPOLLIN, {.fd = lfd}};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::unordered_map<int, Conn> conns;
  std::vector<epoll_event> events(256);
  char buf[65536];
  std::string out;
  while (true) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK)) >= 0) {
          int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event cev{EPOLLIN, {.fd = c}};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          conns[c];
        }
        continue;
      }
      Conn& c = conns[fd];
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) {
        close(fd);
        conns.erase(fd);
        continue;
      }
      c.in.append(buf, static_cast<size_t>(r));
      int answers = parse(c);
      out.clear();
      for (int k = 0; k < answers; ++k) out += kResponse;
      if (!out.empty() && write(fd, out.data(), out.size()) < 0) {
        close(fd);
        conns.erase(fd);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
    return 2;
  }
  int port = std::atoi(argv[1]);
  int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(loop, port);
  loop(port);
}
