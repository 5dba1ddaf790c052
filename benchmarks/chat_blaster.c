/* chat_blaster: bench_dummy_ceiling.py's blaster in C, for small writes.
 *
 * The Python blaster is the bound once its sends are small (one Python call
 * per send()), and small sends are what the many-rooms shape is: a server at
 * 10,000 clients in 100 rooms writes each client one or two chats per loop
 * iteration. This one builds, per room, the S_CHAT stream every member of
 * that room receives (each of its `m = conns / rooms` members chatting in
 * turn, `rounds` times; the dummy's chat format, player ids 1000 + client
 * index), accepts `conns` connections in order (connection k is client k, in
 * room k % rooms as netcore-dummy places them, its (k / rooms)-th member), and writes each connection its room's stream `send_bytes` at
 * a time, round-robin over the connections, then shuts each down and waits
 * for the receiver to hang up.
 *
 *   gcc -O2 -o /tmp/chat_blaster benchmarks/chat_blaster.c
 *   chat_blaster CONNS ROOMS ROUNDS SIZE SEND_BYTES     (prints its port)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FIRST_PLAYER_ID 1000
#define PKT_S_CHAT 1005

static size_t put_varint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

/* One framed S_CHAT{playerId, msg = "<sender> <seq> 0 " padded with '.' to size}. */
static size_t put_chat(unsigned char *out, uint64_t sender, uint64_t seq, int size) {
    char msg[256];
    int len = snprintf(msg, sizeof msg, "%llu %llu 0 ", (unsigned long long)sender,
                       (unsigned long long)seq);
    while (len < size && len < (int)sizeof msg - 1) msg[len++] = '.';
    unsigned char *p = out + 4;
    *p++ = 0x08;
    p += put_varint(p, FIRST_PLAYER_ID + sender);
    *p++ = 0x12;
    p += put_varint(p, (uint64_t)len);
    memcpy(p, msg, len);
    p += len;
    size_t total = (size_t)(p - out);
    out[0] = total & 0xff; out[1] = total >> 8;
    out[2] = PKT_S_CHAT & 0xff; out[3] = PKT_S_CHAT >> 8;
    return total;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: chat_blaster CONNS ROOMS ROUNDS SIZE SEND_BYTES\n");
        return 2;
    }
    int conns = atoi(argv[1]), rooms = atoi(argv[2]), rounds = atoi(argv[3]);
    int size = atoi(argv[4]), send_bytes = atoi(argv[5]);
    if (conns < 1 || rooms < 1 || conns % rooms || rounds < 1 || size < 1 || size > 200
            || send_bytes < 1) {
        fprintf(stderr, "chat_blaster: bad arguments (conns must be a multiple of rooms)\n");
        return 2;
    }
    int m = conns / rooms;
    unsigned char **stream = calloc(rooms, sizeof *stream);
    size_t *len = calloc(rooms, sizeof *len);
    if (!stream || !len) { perror("chat_blaster"); return 1; }
    for (int r = 0; r < rooms; r++) {
        stream[r] = malloc((size_t)rounds * m * 240);
        if (!stream[r]) { perror("chat_blaster"); return 1; }
        for (int seq = 0; seq < rounds; seq++)
            for (int j = 0; j < m; j++)
                len[r] += put_chat(stream[r] + len[r], (uint64_t)j * rooms + r, seq, size);
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4096)
            || getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
        perror("chat_blaster: listen");
        return 1;
    }
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    int *fd = calloc(conns, sizeof *fd);
    size_t *pos = calloc(conns, sizeof *pos);
    struct pollfd *pfd = calloc(conns, sizeof *pfd);
    if (!fd || !pos || !pfd) { perror("chat_blaster"); return 1; }
    for (int k = 0; k < conns; k++) {
        fd[k] = accept(lfd, NULL, NULL);
        if (fd[k] < 0) { perror("chat_blaster: accept"); return 1; }
        fcntl(fd[k], F_SETFL, fcntl(fd[k], F_GETFL) | O_NONBLOCK);
    }

    int remaining = conns;
    while (remaining) {
        int progressed = 0, waiting = 0;
        for (int k = 0; k < conns; k++) {
            int r = k % rooms;
            if (pos[k] == len[r]) continue;
            size_t n = len[r] - pos[k];
            if (n > (size_t)send_bytes) n = (size_t)send_bytes;
            ssize_t sent = send(fd[k], stream[r] + pos[k], n, MSG_NOSIGNAL);
            if (sent > 0) {
                pos[k] += (size_t)sent;
                progressed = 1;
                if (pos[k] == len[r]) { shutdown(fd[k], SHUT_WR); remaining--; }
            } else if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                perror("chat_blaster: send");
                return 1;
            } else {
                pfd[waiting].fd = fd[k];
                pfd[waiting].events = POLLOUT;
                waiting++;
            }
        }
        if (!progressed && waiting) poll(pfd, waiting, 1000);
    }
    /* Stay until the receiver hangs up, so no unread byte is ever reset. */
    char sink[4096];
    for (int k = 0; k < conns; k++) {
        fcntl(fd[k], F_SETFL, fcntl(fd[k], F_GETFL) & ~O_NONBLOCK);
        while (read(fd[k], sink, sizeof sink) > 0) {}
        close(fd[k]);
    }
    return 0;
}
