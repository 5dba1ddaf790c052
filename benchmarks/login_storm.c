/* login_storm: guest login + enter as fast as one core can drive them.
 *
 * A load generator for bench_login_storm.py in C, so that the client side
 * costs a few microseconds per login and the server, not the generator, is
 * what is measured (netcore-dummy spends ~60 us of Python per client and is
 * the bound of bench_fanout's storm). Per client: nonblocking connect, an
 * empty C_LOGIN (a guest, as the original client sends), wait for S_LOGIN,
 * C_ENTER_GAME{roomId}, wait for S_ENTER_GAME; then the connection is held
 * open until every client is done, as netcore-dummy --hold does. At most
 * --concurrency clients are between connect and S_ENTER_GAME at once.
 *
 * It speaks only the framing (uint16 size incl. header, uint16 id, little
 * endian) and the first byte pair of the two replies (field 1 `success`
 * = true is 0x08 0x01 on the wire); anything else counts as failed.
 *
 *   gcc -O2 -o /tmp/login_storm benchmarks/login_storm.c
 *   /tmp/login_storm PORT CLIENTS CONCURRENCY ROOMS
 *
 * Prints one JSON line: {"clients", "in_game", "failed", "seconds", "logins_per_s"}.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_LOGIN = 1001, C_ENTER_GAME = 1002, S_ENTER_GAME = 1003, C_LOGIN = 1000 };
enum { ST_CONNECTING, ST_LOGIN, ST_ENTER, ST_DONE, ST_FAILED };

typedef struct {
    int fd, state;
    unsigned room;
    unsigned char buf[512];
    int len;
} client_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_packet(int fd, unsigned id, const unsigned char *payload, int n) {
    unsigned char out[64];
    int size = 4 + n;
    out[0] = size & 0xff; out[1] = size >> 8; out[2] = id & 0xff; out[3] = id >> 8;
    memcpy(out + 4, payload, n);
    return send(fd, out, size, MSG_NOSIGNAL) == size ? 0 : -1;
}

static int send_enter(client_t *c) {
    unsigned char p[8];
    int n = 0;
    if (c->room) {           /* roomId = 2, a varint; 0 is the default, omitted */
        unsigned v = c->room;
        p[n++] = 0x10;
        while (v >= 0x80) { p[n++] = (v & 0x7f) | 0x80; v >>= 7; }
        p[n++] = v;
    }
    return send_packet(c->fd, C_ENTER_GAME, p, n);
}

/* Reads what arrived; returns 1 when the client finished, -1 on failure. */
static int on_readable(client_t *c) {
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        if (r == 0) return -1;
        c->len += r;
        while (c->len >= 4) {
            int size = c->buf[0] | c->buf[1] << 8, id = c->buf[2] | c->buf[3] << 8;
            if (size < 4 || size > (int)sizeof c->buf) return -1;
            if (c->len < size) break;
            int ok = size >= 6 && c->buf[4] == 0x08 && c->buf[5] == 0x01;
            if (c->state == ST_LOGIN && id == S_LOGIN) {
                if (!ok || send_enter(c)) return -1;
                c->state = ST_ENTER;
            } else if (c->state == ST_ENTER && id == S_ENTER_GAME) {
                if (!ok) return -1;
                c->state = ST_DONE;
            }   /* anything else (a chat of the room) is skipped */
            memmove(c->buf, c->buf + size, c->len - size);
            c->len -= size;
        }
        if (c->state == ST_DONE) return 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: login_storm PORT CLIENTS CONCURRENCY ROOMS\n");
        return 2;
    }
    int port = atoi(argv[1]), clients = atoi(argv[2]), conc = atoi(argv[3]), rooms = atoi(argv[4]);
    if (port <= 0 || clients <= 0 || conc <= 0 || rooms <= 0 || clients > 1000000) {
        fprintf(stderr, "login_storm: bad arguments\n");
        return 2;
    }
    client_t *cs = calloc(clients, sizeof *cs);
    int ep = epoll_create1(0);
    struct epoll_event *evs = calloc(1024, sizeof *evs);
    if (!cs || ep < 0 || !evs) { perror("login_storm"); return 1; }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);

    int next = 0, active = 0, done = 0, failed = 0;
    double t0 = now();
    while (done + failed < clients) {
        while (active < conc && next < clients) {
            client_t *c = &cs[next];
            c->room = (unsigned)(next % rooms);
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            int one = 1;
            if (c->fd >= 0) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (c->fd < 0 || (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0
                              && errno != EINPROGRESS)) {
                if (c->fd >= 0) close(c->fd);
                c->fd = -1; c->state = ST_FAILED; failed++; next++;
                continue;
            }
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)next };
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            next++; active++;
        }
        int n = epoll_wait(ep, evs, 1024, 10000);
        if (n == 0) break;                       /* 10 s with no progress at all: give up */
        for (int i = 0; i < n; i++) {
            client_t *c = &cs[evs[i].data.u32];
            int r = 0;
            if (c->state == ST_CONNECTING) {
                int err = 0; socklen_t l = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err || send_packet(c->fd, C_LOGIN, NULL, 0)) r = -1;
                else {
                    c->state = ST_LOGIN;
                    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = evs[i].data.u32 };
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            } else if (c->state == ST_LOGIN || c->state == ST_ENTER) {
                r = on_readable(c);
            } else {
                continue;
            }
            if (r != 0) {
                /* Held open, but no longer watched: its room's traffic is not ours to read. */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                active--;
                if (r > 0) done++;
                else { c->state = ST_FAILED; failed++; }
            }
        }
    }
    double secs = now() - t0;
    for (int i = 0; i < clients; i++) if (cs[i].fd > 0) close(cs[i].fd);
    failed = clients - done;
    printf("{\"clients\": %d, \"in_game\": %d, \"failed\": %d, \"seconds\": %.4f, "
           "\"logins_per_s\": %.1f}\n", clients, done, failed, secs, done / secs);
    return failed ? 1 : 0;
}
