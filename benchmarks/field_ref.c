/*
 * field_ref.c - the C reference server for netcore-server's field (bench_field.py).
 *
 * The same protocol as netcore-server with --field-size (docs/protocol.md, "The field")
 * and the same algorithm as netcore.field (src/netcore/field.pxd): a grid of cells as
 * wide as the view radius, each an intrusive list of entities; symmetric neighbour
 * lists; a move scans the 3x3 cells around the new position, marks who stays, enters
 * and leaves, and sends the mover S_MOVE, S_DESPAWN, S_SPAWN, then S_MOVE to who
 * stays, S_DESPAWN to who left, S_SPAWN to who entered, each packet encoded once and
 * appended to every recipient's output buffer. Monsters (--npcs per field) wander on
 * a timerfd tick. Chat is room-wide. Single-threaded epoll, nonblocking sockets, one
 * send() per dirty connection per epoll batch.
 *
 * It does none of netcore's validation beyond the field's own rules, limits or
 * logins: a floor for latency and CPU, the baseline bench_field.py prints ratios to.
 *
 *   gcc -O2 -Wall -o /tmp/field_ref benchmarks/field_ref.c -lm
 *   /tmp/field_ref --port 7777 [--field-size 1000] [--view-radius 50] [--max-step 10]
 *                  [--npcs 0] [--tick-rate 10]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum { C_LOGIN = 1000, S_LOGIN, C_ENTER_GAME, S_ENTER_GAME, C_CHAT, S_CHAT, C_MOVE, S_MOVE,
       S_SPAWN, S_DESPAWN };
#define IN_CAP 65536u
#define MAX_EVENTS 1024
#define MAX_ROOMS 65536u
#define MAX_PAYLOAD 65531
#define NO_SLOT (-1)

typedef struct {
    uint64_t id;
    float x, y;
    int cell, next, prev;       /* cell == NO_SLOT: a free slot */
    int *seen, n_seen, cap_seen;
    uint32_t mark;
    int fd;                     /* its connection; -1 for a monster */
    const uint8_t *tail;        /* name and type, encoded */
    int tail_len;
} entity_t;

typedef struct {
    entity_t *e;
    int cap, free_head, count, players;
    int *cells, cols;
    int *monsters, n_monsters;
} field_t;

typedef struct {
    uint8_t used, dirty, logged_in;
    int slot;                   /* its entity, or -1 */
    uint32_t room;
    uint64_t player_id;
    uint8_t *in;
    uint32_t inlen;
    uint8_t *out;
    size_t outoff, outlen, outcap;
} conn_t;

static conn_t *conns;
static int max_fd;
static field_t *fields[MAX_ROOMS];
static int *dirty, n_dirty;
static int ep, lfd, tfd;
static uint64_t next_id = 1;
static double SIZE = 1000, RADIUS = 50, STEP = 10, CELL, R2, S2;
static int NPCS = 0;
static double TICK = 10;
static uint32_t stamp;
static int *stays, *enters, *leaves, cap_scratch;
static uint8_t scratch[IN_CAP];
static uint8_t pkt[1 << 20];
static const uint8_t PLAYER_TAIL[] = {0x12, 7, 'K', 'n', 'i', 'g', 'h', 't', '1', 0x18, 1};
static uint8_t monster_tails[4096][16];
static int monster_tail_len[4096];

static inline uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}
static inline int varint_size(uint64_t v) { int n = 1; while (v >= 0x80) { v >>= 7; n++; } return n; }
static inline int get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; p < end && shift < 64; shift += 7) {
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *pp = p; *out = v; return 1; }
    }
    return 0;
}
static inline uint32_t fbits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static inline uint8_t *put_float(uint8_t *p, uint8_t tag, float f) {
    uint32_t b = fbits(f);
    if (!b) return p;
    *p++ = tag; memcpy(p, &b, 4);                     /* little-endian hosts */
    return p + 4;
}
static inline int float_size(float f) { return fbits(f) ? 5 : 0; }

/* ---- output ---- */
static void grow_out(conn_t *c, size_t need) {
    if (c->outoff && c->outlen + need > c->outcap) {
        memmove(c->out, c->out + c->outoff, c->outlen);
        c->outoff = 0;
    }
    if (c->outoff + c->outlen + need > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        while (cap < c->outoff + c->outlen + need) cap *= 2;
        c->out = realloc(c->out, cap);
        c->outcap = cap;
    }
}
static void send_to(int fd, const uint8_t *p, size_t n) {
    conn_t *c = &conns[fd];
    if (!c->used) return;
    grow_out(c, n);
    memcpy(c->out + c->outoff + c->outlen, p, n);
    c->outlen += n;
    if (!c->dirty) { c->dirty = 1; dirty[n_dirty++] = fd; }
}
static size_t frame(uint8_t *p, int id, size_t payload) {
    size_t n = payload + 4;
    p[0] = n & 0xff; p[1] = n >> 8; p[2] = id & 0xff; p[3] = id >> 8;
    return n;
}

/* ---- the field ---- */
static field_t *field_new(void) {
    field_t *f = calloc(1, sizeof *f);
    f->cols = (int)(SIZE / CELL) + 1;
    f->cells = malloc(sizeof(int) * f->cols * f->cols);
    for (int i = 0; i < f->cols * f->cols; i++) f->cells[i] = NO_SLOT;
    f->free_head = NO_SLOT;
    return f;
}
static int cell_of(field_t *f, float x, float y) {
    int cx = (int)(x / CELL), cy = (int)(y / CELL);
    if (cx >= f->cols) cx = f->cols - 1;
    if (cy >= f->cols) cy = f->cols - 1;
    return cy * f->cols + cx;
}
static void cell_insert(field_t *f, int s, int cell) {
    entity_t *e = &f->e[s];
    e->cell = cell; e->prev = NO_SLOT; e->next = f->cells[cell];
    if (e->next != NO_SLOT) f->e[e->next].prev = s;
    f->cells[cell] = s;
}
static void cell_remove(field_t *f, int s) {
    entity_t *e = &f->e[s];
    if (e->prev != NO_SLOT) f->e[e->prev].next = e->next; else f->cells[e->cell] = e->next;
    if (e->next != NO_SLOT) f->e[e->next].prev = e->prev;
}
static void see(field_t *f, int a, int b) {
    for (int k = 0; k < 2; k++) {
        entity_t *e = &f->e[k ? b : a];
        if (e->n_seen == e->cap_seen) {
            e->cap_seen = e->cap_seen * 2 + 8;
            e->seen = realloc(e->seen, sizeof(int) * e->cap_seen);
        }
        e->seen[e->n_seen++] = k ? a : b;
    }
}
static void forget(entity_t *e, int other) {
    for (int i = 0; i < e->n_seen; i++)
        if (e->seen[i] == other) { e->seen[i] = e->seen[--e->n_seen]; return; }
}
static void scratch_for(int n) {
    if (n <= cap_scratch) return;
    cap_scratch = n * 2;
    stays = realloc(stays, sizeof(int) * cap_scratch);
    enters = realloc(enters, sizeof(int) * cap_scratch);
    leaves = realloc(leaves, sizeof(int) * cap_scratch);
}
static int take_slot(field_t *f) {
    if (f->free_head == NO_SLOT) {
        int cap = f->cap * 2 + 16;
        f->e = realloc(f->e, sizeof(entity_t) * cap);
        for (int i = f->cap; i < cap; i++) {
            memset(&f->e[i], 0, sizeof(entity_t));
            f->e[i].cell = NO_SLOT;
            f->e[i].next = i + 1 < cap ? i + 1 : NO_SLOT;
        }
        f->free_head = f->cap;
        f->cap = cap;
    }
    int s = f->free_head;
    f->free_head = f->e[s].next;
    return s;
}

/* S_MOVE of entity s, framed into p; its size. */
static size_t move_packet(uint8_t *p, entity_t *e) {
    uint8_t *q = p + 4;
    *q++ = 0x08; q = put_varint(q, e->id);
    q = put_float(q, 0x15, e->x); q = put_float(q, 0x1D, e->y);
    return frame(p, S_MOVE, q - p - 4);
}
static inline int player_body(entity_t *e) {
    return 1 + varint_size(e->id) + e->tail_len + float_size(e->x) + float_size(e->y);
}
/* S_SPAWN (several where one would pass 65,535 bytes) of these slots, to fd's. */
typedef void (*emit_fn)(const uint8_t *, size_t, void *);
static void spawn_packets(field_t *f, const int *slots, int n, emit_fn emit, void *arg) {
    int start = 0;
    while (start < n) {
        size_t payload = 0;
        int end = start;
        while (end < n) {
            int body = player_body(&f->e[slots[end]]);
            size_t item = 1 + varint_size(body) + body;
            if (payload + item > MAX_PAYLOAD && end > start) break;
            payload += item; end++;
        }
        uint8_t *q = pkt + 4;
        for (int i = start; i < end; i++) {
            entity_t *e = &f->e[slots[i]];
            *q++ = 0x0A; q = put_varint(q, player_body(e));
            *q++ = 0x08; q = put_varint(q, e->id);
            memcpy(q, e->tail, e->tail_len); q += e->tail_len;
            q = put_float(q, 0x25, e->x); q = put_float(q, 0x2D, e->y);
        }
        emit(pkt, frame(pkt, S_SPAWN, payload), arg);
        start = end;
    }
}
static void despawn_packets(field_t *f, const int *slots, int n, emit_fn emit, void *arg) {
    int start = 0;
    while (start < n) {
        size_t ids = 0;
        int end = start;
        while (end < n) {
            size_t v = varint_size(f->e[slots[end]].id);
            if (1 + varint_size(ids + v) + ids + v > MAX_PAYLOAD && end > start) break;
            ids += v; end++;
        }
        uint8_t *q = pkt + 4;
        *q++ = 0x0A; q = put_varint(q, ids);
        for (int i = start; i < end; i++) q = put_varint(q, f->e[slots[i]].id);
        emit(pkt, frame(pkt, S_DESPAWN, q - pkt - 4), arg);
        start = end;
    }
}
typedef struct { field_t *f; const int *slots; int n; } group_t;
static void to_one(const uint8_t *p, size_t n, void *fd) { send_to(*(int *)fd, p, n); }
static void to_group(const uint8_t *p, size_t n, void *arg) {
    group_t *g = arg;
    for (int i = 0; i < g->n; i++) {
        int fd = g->f->e[g->slots[i]].fd;
        if (fd >= 0) send_to(fd, p, n);
    }
}

static int field_add(field_t *f, uint64_t id, float x, float y, int fd,
                     const uint8_t *tail, int tail_len) {
    int s = take_slot(f), n_enter = 0;
    entity_t *e = &f->e[s];
    e->id = id; e->x = x; e->y = y; e->fd = fd; e->n_seen = 0;
    e->tail = tail; e->tail_len = tail_len;
    f->count++;
    scratch_for(f->count);
    int cell = cell_of(f, x, y), cx = cell % f->cols, cy = cell / f->cols;
    for (int gy = cy > 0 ? cy - 1 : 0; gy <= cy + 1 && gy < f->cols; gy++)
        for (int gx = cx > 0 ? cx - 1 : 0; gx <= cx + 1 && gx < f->cols; gx++)
            for (int o = f->cells[gy * f->cols + gx]; o != NO_SLOT; o = f->e[o].next) {
                double dx = (double)x - f->e[o].x, dy = (double)y - f->e[o].y;
                if (dx * dx + dy * dy <= R2) enters[n_enter++] = o;
            }
    cell_insert(f, s, cell);
    for (int i = 0; i < n_enter; i++) see(f, s, enters[i]);
    if (n_enter && fd >= 0) spawn_packets(f, enters, n_enter, to_one, &fd);
    if (n_enter) {
        group_t g = {f, enters, n_enter};
        spawn_packets(f, &s, 1, to_group, &g);
    }
    return s;
}
static void field_remove(field_t *f, int s) {
    entity_t *e = &f->e[s];
    int n = e->n_seen;
    scratch_for(n);
    memcpy(leaves, e->seen, sizeof(int) * n);
    for (int i = 0; i < n; i++) { forget(&f->e[leaves[i]], s); }
    e->n_seen = 0;
    if (n) { group_t g = {f, leaves, n}; despawn_packets(f, &s, 1, to_group, &g); }
    cell_remove(f, s);
    e->cell = NO_SLOT; e->next = f->free_head; f->free_head = s;
    f->count--;
}
/* A move of slot s to (x, y): checked, then the packets of field.pxd. */
static void field_move(field_t *f, int s, float x, float y) {
    entity_t *e = &f->e[s];
    uint8_t one[64];
    double dx = (double)x - e->x, dy = (double)y - e->y;
    if (!isfinite(x) || !isfinite(y) || !(x >= 0 && x <= SIZE && y >= 0 && y <= SIZE)
            || dx * dx + dy * dy > S2) {
        if (e->fd >= 0) send_to(e->fd, one, move_packet(one, e));
        return;
    }
    x += 0.0f; y += 0.0f;
    int n_old = e->n_seen, n_stay = 0, n_enter = 0, n_leave = 0;
    stamp += 2;
    uint32_t old_mark = stamp, new_mark = stamp + 1;
    for (int i = 0; i < n_old; i++) f->e[e->seen[i]].mark = old_mark;
    e->x = x; e->y = y;
    int cell = cell_of(f, x, y);
    if (cell != e->cell) { cell_remove(f, s); cell_insert(f, s, cell); }
    scratch_for(f->count);
    int cx = cell % f->cols, cy = cell / f->cols;
    for (int gy = cy > 0 ? cy - 1 : 0; gy <= cy + 1 && gy < f->cols; gy++)
        for (int gx = cx > 0 ? cx - 1 : 0; gx <= cx + 1 && gx < f->cols; gx++)
            for (int o = f->cells[gy * f->cols + gx]; o != NO_SLOT; o = f->e[o].next) {
                if (o == s) continue;
                entity_t *oe = &f->e[o];
                double ddx = (double)x - oe->x, ddy = (double)y - oe->y;
                if (ddx * ddx + ddy * ddy <= R2) {
                    if (oe->mark == old_mark) stays[n_stay++] = o; else enters[n_enter++] = o;
                    oe->mark = new_mark;
                }
            }
    for (int i = 0; i < n_old; i++)
        if (f->e[e->seen[i]].mark != new_mark) leaves[n_leave++] = e->seen[i];
    for (int i = 0; i < n_leave; i++) { forget(e, leaves[i]); forget(&f->e[leaves[i]], s); }
    for (int i = 0; i < n_enter; i++) see(f, s, enters[i]);
    size_t mn = move_packet(one, e);
    if (e->fd >= 0) {
        int fd = e->fd;
        send_to(fd, one, mn);
        if (n_leave) despawn_packets(f, leaves, n_leave, to_one, &fd);
        if (n_enter) spawn_packets(f, enters, n_enter, to_one, &fd);
    }
    if (n_stay) { group_t g = {f, stays, n_stay}; to_group(one, mn, &g); }
    if (n_leave) { group_t g = {f, leaves, n_leave}; despawn_packets(f, &s, 1, to_group, &g); }
    if (n_enter) { group_t g = {f, enters, n_enter}; spawn_packets(f, &s, 1, to_group, &g); }
}
static float rnd(double hi) { return (float)(drand48() * hi); }

static field_t *field_of(uint32_t room) {
    if (!fields[room]) {
        field_t *f = fields[room] = field_new();
        f->monsters = malloc(sizeof(int) * (NPCS + 1));
        for (int k = 0; k < NPCS; k++)
            f->monsters[f->n_monsters++] = field_add(f, next_id++, rnd(SIZE), rnd(SIZE), -1,
                                                     monster_tails[k % 4096],
                                                     monster_tail_len[k % 4096]);
    }
    return fields[room];
}
static void tick(void) {
    for (uint32_t r = 0; r < MAX_ROOMS; r++) {
        field_t *f = fields[r];
        if (!f || !f->players) continue;
        for (int k = 0; k < f->n_monsters; k++) {
            entity_t *e = &f->e[f->monsters[k]];
            double a = drand48() * 2 * M_PI, st = drand48() * STEP * 0.99;
            double x = e->x + st * cos(a), y = e->y + st * sin(a);
            x = x < 0 ? 0 : x > SIZE ? SIZE : x;
            y = y < 0 ? 0 : y > SIZE ? SIZE : y;
            field_move(f, f->monsters[k], (float)x, (float)y);
        }
    }
}

/* ---- connections ---- */
static void close_conn(int fd) {
    conn_t *c = &conns[fd];
    if (!c->used) return;
    if (c->slot >= 0) { field_t *f = fields[c->room]; field_remove(f, c->slot); f->players--; }
    free(c->in); free(c->out);
    memset(c, 0, sizeof *c);
    c->slot = -1;
    close(fd);
}
static int flush_conn(int fd) {
    conn_t *c = &conns[fd];
    while (c->outlen) {
        ssize_t n = send(fd, c->out + c->outoff, c->outlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                return 0;
            }
            return -1;
        }
        c->outoff += n; c->outlen -= n;
    }
    c->outoff = 0;
    return 0;
}
static float get_float(const uint8_t **pp, const uint8_t *end) {
    float f = 0;
    if (end - *pp >= 4) { memcpy(&f, *pp, 4); *pp += 4; }
    return f;
}
static void on_packet(int fd, int id, const uint8_t *p, const uint8_t *end) {
    conn_t *c = &conns[fd];
    uint8_t out[256];
    if (id == C_LOGIN) {
        c->player_id = next_id++;
        c->logged_in = 1;
        uint8_t *q = out + 4;
        *q++ = 0x08; *q++ = 1;
        int body = 1 + varint_size(c->player_id) + sizeof PLAYER_TAIL;
        *q++ = 0x12; q = put_varint(q, body);
        *q++ = 0x08; q = put_varint(q, c->player_id);
        memcpy(q, PLAYER_TAIL, sizeof PLAYER_TAIL); q += sizeof PLAYER_TAIL;
        send_to(fd, out, frame(out, S_LOGIN, q - out - 4));
    } else if (id == C_ENTER_GAME && c->logged_in && c->slot < 0) {
        uint64_t field, v, room = 0;
        while (p < end && get_varint(&p, end, &field)) {
            if (!get_varint(&p, end, &v)) break;
            if (field >> 3 == 2) room = v;
        }
        if (room >= MAX_ROOMS) room = 0;
        c->room = (uint32_t)room;
        field_t *f = field_of(c->room);
        float x = rnd(SIZE), y = rnd(SIZE);
        uint8_t *q = out + 4;
        *q++ = 0x08; *q++ = 1; *q++ = 0x10; q = put_varint(q, c->player_id);
        q = put_float(q, 0x1D, x); q = put_float(q, 0x25, y);
        send_to(fd, out, frame(out, S_ENTER_GAME, q - out - 4));
        c->slot = field_add(f, c->player_id, x, y, fd, PLAYER_TAIL, sizeof PLAYER_TAIL);
        f->players++;
    } else if (id == C_MOVE && c->slot >= 0) {
        float x = 0, y = 0;
        uint64_t tag;
        while (p < end && get_varint(&p, end, &tag)) {
            if (tag == 0x0D) x = get_float(&p, end);
            else if (tag == 0x15) y = get_float(&p, end);
            else break;
        }
        field_move(fields[c->room], c->slot, x, y);
    } else if (id == C_CHAT && c->slot >= 0) {
        /* S_CHAT{playerId, msg} to everyone in the room: the msg is C_CHAT's field 1. */
        uint64_t tag, len;
        if (!(get_varint(&p, end, &tag) && tag == 0x0A && get_varint(&p, end, &len)
              && len <= (uint64_t)(end - p))) return;
        uint8_t *q = pkt + 4;
        *q++ = 0x08; q = put_varint(q, c->player_id);
        *q++ = 0x12; q = put_varint(q, len); memcpy(q, p, len); q += len;
        size_t n = frame(pkt, S_CHAT, q - pkt - 4);
        field_t *f = fields[c->room];
        for (int s = 0; s < f->cap; s++)
            if (f->e[s].cell != NO_SLOT && f->e[s].fd >= 0) send_to(f->e[s].fd, pkt, n);
    }
}
static void on_readable(int fd) {
    conn_t *c = &conns[fd];
    for (;;) {
        uint8_t *buf = scratch;
        uint32_t have = 0;
        if (c->inlen) { memcpy(scratch, c->in, c->inlen); have = c->inlen; free(c->in); c->in = NULL; c->inlen = 0; }
        ssize_t n = recv(fd, buf + have, IN_CAP - have, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { close_conn(fd); return; }
        if (n < 0) {
            if (have) { c->in = malloc(have); memcpy(c->in, buf, have); c->inlen = have; }
            return;
        }
        uint32_t total = have + (uint32_t)n, pos = 0;
        while (total - pos >= 4) {
            uint32_t size = buf[pos] | (buf[pos + 1] << 8), id = buf[pos + 2] | (buf[pos + 3] << 8);
            if (size < 4) { close_conn(fd); return; }
            if (total - pos < size) break;
            on_packet(fd, id, buf + pos + 4, buf + pos + size);
            if (!conns[fd].used) return;
            pos += size;
        }
        if (pos < total) { c->inlen = total - pos; c->in = malloc(c->inlen); memcpy(c->in, buf + pos, c->inlen); }
        if ((size_t)n < IN_CAP - have) return;
    }
}

int main(int argc, char **argv) {
    int port = 7777;
    static struct option opts[] = {
        {"port", 1, 0, 'p'}, {"field-size", 1, 0, 's'}, {"view-radius", 1, 0, 'r'},
        {"max-step", 1, 0, 'm'}, {"npcs", 1, 0, 'n'}, {"tick-rate", 1, 0, 't'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 's': SIZE = atof(optarg); break;
        case 'r': RADIUS = atof(optarg); break;
        case 'm': STEP = atof(optarg); break;
        case 'n': NPCS = atoi(optarg); break;
        case 't': TICK = atof(optarg); break;
        default: return 2;
        }
    }
    CELL = SIZE / RADIUS < 255 ? RADIUS : SIZE / 255;
    R2 = RADIUS * RADIUS; S2 = STEP * STEP;
    for (int k = 0; k < 4096; k++) {
        char name[16];
        int len = snprintf(name, sizeof name, "Monster%d", k + 1);
        uint8_t *q = monster_tails[k];
        *q++ = 0x12; *q++ = (uint8_t)len; memcpy(q, name, len); q += len;
        *q++ = 0x18; *q++ = 4;
        monster_tail_len[k] = (int)(q - monster_tails[k]);
    }
    srand48(1);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    max_fd = (int)rl.rlim_cur;
    conns = calloc(max_fd, sizeof(conn_t));
    for (int i = 0; i < max_fd; i++) conns[i].slot = -1;
    dirty = malloc(sizeof(int) * max_fd);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    long ns = (long)(1e9 / TICK);
    struct itimerspec its = {{ns / 1000000000, ns % 1000000000}, {ns / 1000000000, ns % 1000000000}};
    timerfd_settime(tfd, 0, &its, NULL);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    printf("field_ref listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c].used = 1; conns[c].slot = -1;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else if (fd == tfd) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) > 0) tick();
            } else {
                if (evs[i].events & (EPOLLHUP | EPOLLERR)) { close_conn(fd); continue; }
                if (evs[i].events & EPOLLOUT) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                    if (!conns[fd].dirty) { conns[fd].dirty = 1; dirty[n_dirty++] = fd; }
                }
                if (evs[i].events & EPOLLIN) on_readable(fd);
            }
        }
        for (int i = 0; i < n_dirty; i++) {
            int fd = dirty[i];
            conns[fd].dirty = 0;
            if (conns[fd].used && flush_conn(fd) < 0) close_conn(fd);
        }
        n_dirty = 0;
    }
}
