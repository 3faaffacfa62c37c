// cpu-floor: the least CPU a client can spend per streamed request over the kernel's TCP.
//
// It keeps C connections busy against an OpenAI-style server: each connection sends a
// streamed chat request, reads the chunked response until its terminating chunk, and sends the
// next. Nothing else: no timing, no parsing beyond the response's status and the end of its
// body, no records, no runtime. Its CPU per request is a floor for any client in user space
// that talks to the same server over TCP on the same machine, so a client's CPU can be judged
// against it. Options add, one at a time, the system calls a measuring client makes:
//
//   --rx-stamps   ask the kernel to stamp received data (SO_TIMESTAMPNS) and read with recvmsg
//   --tx-stamps   ask for transmit stamps (SO_TIMESTAMPING) and drain the error queue after
//                 each response
//   --peek        a non-blocking recv(MSG_PEEK) before a connection is reused
//
// Usage: cpu-floor PORT CONNS REQUESTS [--osl N] [--rx-stamps] [--tx-stamps] [--peek]
// Prints one line: requests, seconds, user and system CPU per request (getrusage).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
  int fd;
  int head_checked;   // the status line was seen
  char tail[5];       // the last bytes read, to find "0\r\n\r\n" across reads
  int busy;           // a request is in flight
};

static char request[4096];
static int request_len;
static int rx_stamps, tx_stamps, peek;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void send_request(struct conn *c) {
  if (peek) {
    char byte;
    ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0 || errno != EAGAIN) {
      fprintf(stderr, "connection not reusable\n");
      exit(1);
    }
  }
  ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
  if (n != request_len) die("send");
  c->busy = 1;
  c->head_checked = 0;
  memset(c->tail, 0, sizeof c->tail);
}

// Reads what the socket has; returns 1 when the response ended.
static int read_some(struct conn *c, char *buf, size_t room) {
  for (;;) {
    ssize_t n;
    if (rx_stamps) {
      char control[64];
      struct iovec iov = {buf, room};
      struct msghdr msg = {0};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      n = recvmsg(c->fd, &msg, MSG_DONTWAIT);
    } else {
      n = recv(c->fd, buf, room, MSG_DONTWAIT);
    }
    if (n < 0) {
      if (errno == EAGAIN) return 0;
      die("recv");
    }
    if (n == 0) {
      fprintf(stderr, "server closed the connection\n");
      exit(1);
    }
    if (!c->head_checked) {
      if (n < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "not a 200 response: %.40s\n", buf);
        exit(1);
      }
      c->head_checked = 1;
    }
    // Slide the last five bytes seen.
    char joined[5 + 5];
    size_t keep = n < 5 ? (size_t)n : 5;
    memcpy(joined, c->tail, 5);
    memcpy(joined + 5, buf + n - keep, keep);
    memcpy(c->tail, joined + keep, 5);
    if (memcmp(c->tail, "0\r\n\r\n", 5) == 0) return 1;
    // Fewer bytes than the room: the queue is empty; the next edge brings more (as tokio).
    if ((size_t)n < room) return 0;
  }
}

static void drain_errqueue(int fd) {
  char control[256], byte;
  for (;;) {
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: cpu-floor PORT CONNS REQUESTS [--osl N] [--rx-stamps] [--tx-stamps] [--peek]\n");
    return 2;
  }
  int port = atoi(argv[1]), conns = atoi(argv[2]);
  long total = atol(argv[3]);
  int osl = 32;
  for (int i = 4; i < argc; i++) {
    if (!strcmp(argv[i], "--rx-stamps")) rx_stamps = 1;
    else if (!strcmp(argv[i], "--tx-stamps")) tx_stamps = 1;
    else if (!strcmp(argv[i], "--peek")) peek = 1;
    else if (!strcmp(argv[i], "--osl") && i + 1 < argc) osl = atoi(argv[++i]);
    else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || conns <= 0 || conns > 60000 || total <= 0 || osl <= 0) {
    fprintf(stderr, "PORT, CONNS, REQUESTS and --osl must be positive (PORT <= 65535, CONNS <= 60000)\n");
    return 2;
  }

  // A prompt of about 64 tokens, as `aiperf profile --isl 64` sends.
  char prompt[512] = "";
  for (int i = 0; i < 64; i++) strcat(prompt, i ? " token" : "token");
  char body[1024];
  int body_len = snprintf(body, sizeof body,
                          "{\"model\":\"mock\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                          "\"max_tokens\":%d,\"stream\":true}",
                          prompt, osl);
  request_len = snprintf(request, sizeof request,
                         "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                         "Content-Length: %d\r\n\r\n%s",
                         port, body_len, body);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct conn *cs = calloc(conns, sizeof *cs);
  if (!cs) die("calloc");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  long sent = 0, done = 0;
  for (int i = 0; i < conns; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rx_stamps && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
      die("SO_TIMESTAMPNS");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    if (tx_stamps) {  // (OPT_ID needs an established connection)
      int flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                  SOF_TIMESTAMPING_OPT_TSONLY | SOF_TIMESTAMPING_OPT_ID;
      if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) < 0)
        die("SO_TIMESTAMPING");
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    cs[i].fd = fd;
    if (sent < total) {
      send_request(&cs[i]);
      sent++;
    }
  }

  static char buf[65536];
  struct epoll_event events[256];
  while (done < total) {
    int n = epoll_wait(ep, events, 256, 10000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (n == 0) {
      fprintf(stderr, "no progress for 10 s (%ld of %ld done)\n", done, total);
      return 1;
    }
    for (int k = 0; k < n; k++) {
      struct conn *c = &cs[events[k].data.u32];
      if (!c->busy || !read_some(c, buf, sizeof buf)) continue;
      c->busy = 0;
      done++;
      if (tx_stamps) drain_errqueue(c->fd);
      if (sent < total) {
        send_request(c);
        sent++;
      }
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  double sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("requests %ld wall %.3f s req/s %.0f user %.1f us/req sys %.1f us/req cpu %.1f us/req\n",
         done, wall, done / wall, user / done * 1e6, sys / done * 1e6, (user + sys) / done * 1e6);
  return 0;
}
