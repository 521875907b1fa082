/* RADIUS load generator for scripts/bench/radius: replays pre-encoded datagrams.
 *
 * Usage: loadgen REQUESTS_FILE HOST PORT WINDOW TIMEOUT_MS
 * REQUESTS_FILE: records of [u8 socket index][u16 big-endian length][datagram].
 * Keeps WINDOW requests in flight over up to 16 sockets (SO_RCVBUF 1 MiB each), matches
 * replies by (socket, Identifier), records each latency, and prints one JSON line:
 * sent, replies by code, lost, elapsed seconds, requests/s, p50/p90/p99/max in ms.
 * The caller assigns identifiers so that two requests sharing (socket, Identifier) are
 * never in flight together; a slot still busy simply makes the sender wait for it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKS 16

typedef struct { uint8_t sock; uint16_t len; const uint8_t *data; } req_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s REQUESTS HOST PORT WINDOW TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("open requests"); return 2; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size);
    if (!buf || fread(buf, 1, size, f) != (size_t)size) { perror("read"); return 2; }
    fclose(f);

    size_t cap = 1024, n = 0;
    req_t *reqs = malloc(cap * sizeof(req_t));
    int nsocks = 1;
    for (long off = 0; off + 3 <= size;) {
        if (n == cap) { cap *= 2; reqs = realloc(reqs, cap * sizeof(req_t)); }
        reqs[n].sock = buf[off];
        reqs[n].len = (uint16_t)((buf[off + 1] << 8) | buf[off + 2]);
        reqs[n].data = buf + off + 3;
        if (reqs[n].sock >= MAX_SOCKS) { fprintf(stderr, "socket index too big\n"); return 2; }
        if (reqs[n].sock + 1 > nsocks) nsocks = reqs[n].sock + 1;
        off += 3 + reqs[n].len;
        n++;
    }
    int window = atoi(argv[4]);
    double timeout = atoi(argv[5]) / 1000.0;

    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &dst.sin_addr);

    int socks[MAX_SOCKS];
    struct pollfd pfd[MAX_SOCKS];
    for (int i = 0; i < nsocks; i++) {
        socks[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int rcv = 1 << 20;
        setsockopt(socks[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        setsockopt(socks[i], SOL_SOCKET, SO_SNDBUF, &rcv, sizeof rcv);
        if (connect(socks[i], (struct sockaddr *)&dst, sizeof dst) < 0) { perror("connect"); return 2; }
        pfd[i].fd = socks[i];
        pfd[i].events = POLLIN;
    }

    /* slot[sock][id] = request index in flight, or -1 */
    long slot[MAX_SOCKS][256];
    memset(slot, 0xff, sizeof slot);
    double *sent_at = calloc(n, sizeof(double));
    double *lat = calloc(n, sizeof(double));
    long codes[256] = {0};
    size_t next = 0, done = 0, nlat = 0, lost = 0;
    int inflight = 0;
    uint8_t rbuf[8192];
    double start = now_s(), last_sweep = start;

    while (done < n) {
        while (inflight < window && next < n) {
            req_t *r = &reqs[next];
            uint8_t id = r->data[1];
            if (slot[r->sock][id] >= 0) break; /* wait for that id to come back */
            sent_at[next] = now_s();
            if (send(socks[r->sock], r->data, r->len, 0) < 0) {
                if (errno == EAGAIN || errno == ENOBUFS) break;
                perror("send");
                return 1;
            }
            slot[r->sock][id] = (long)next;
            inflight++;
            next++;
        }
        int ready = poll(pfd, nsocks, 5);
        double t = now_s();
        if (ready > 0) {
            for (int i = 0; i < nsocks; i++) {
                if (!(pfd[i].revents & POLLIN)) continue;
                for (;;) {
                    ssize_t got = recv(socks[i], rbuf, sizeof rbuf, 0);
                    if (got < 0) break;
                    if (got < 20) continue;
                    long idx = slot[i][rbuf[1]];
                    if (idx < 0) continue; /* late reply to a request counted lost */
                    slot[i][rbuf[1]] = -1;
                    lat[nlat++] = t - sent_at[idx];
                    codes[rbuf[0]]++;
                    inflight--;
                    done++;
                }
            }
        }
        if (t - last_sweep > 0.05) {
            last_sweep = t;
            for (int s = 0; s < nsocks; s++)
                for (int id = 0; id < 256; id++) {
                    long idx = slot[s][id];
                    if (idx >= 0 && t - sent_at[idx] > timeout) {
                        slot[s][id] = -1;
                        lost++;
                        inflight--;
                        done++;
                    }
                }
        }
    }
    double elapsed = now_s() - start;
    qsort(lat, nlat, sizeof(double), cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((p) * (nlat - 1))] * 1000.0 : 0.0)
    printf("{\"sent\": %zu, \"accept\": %ld, \"reject\": %ld, \"challenge\": %ld, "
           "\"lost\": %zu, \"elapsed\": %.4f, \"rps\": %.1f, \"p50_ms\": %.3f, "
           "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
           n, codes[2], codes[3], codes[11], lost, elapsed, nlat / elapsed,
           PCT(0.50), PCT(0.90), PCT(0.99), nlat ? lat[nlat - 1] * 1000.0 : 0.0);
    return 0;
}
