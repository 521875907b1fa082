/* RADIUS load generator for scripts/bench/radius: replays pre-encoded datagrams and
 * checks that each one got the answer it was built for.
 *
 * Usage: loadgen REQUESTS_FILE HOST PORT WINDOW TIMEOUT_MS [RATE START_EPOCH INTERVAL_S]
 * REQUESTS_FILE: records of [u8 socket index][u8 expected reply code][u32 big-endian due
 * time, µs from the start][u32 big-endian user key][u16 big-endian length][datagram].
 * A user's request is never sent while its previous one is unanswered (a user types one
 * code and waits: two of one user's HOTP codes in flight could be decided out of order).
 *
 * Burst (closed loop, RATE absent or 0): keeps WINDOW requests in flight; due times are
 * ignored. Sustained (open loop, RATE > 0, the offered rate the caller built the due
 * times for, reported back): each request is sent at START_EPOCH (wall clock) + its due
 * time whatever the replies do; WINDOW only caps what may be in flight. Latency counts from
 * the due time, not from a late send, so a server that falls behind cannot hide it by
 * slowing the sender (no coordinated omission); "late" counts the requests sent more
 * than 10 ms after their due time (the cap was reached, or this process starved), and
 * "blocked" those that were due while WINDOW requests (or their slot) were still
 * unanswered: the server, not this process, held them back. So
 * that a server far behind cannot stretch the run without bound, nothing more is sent
 * TIMEOUT_MS after the last due time: the requests left are reported as "unsent" (the
 * tail of the file, in order).
 * Every INTERVAL_S seconds of the run
 * gives one row: replies, req/s, p50/p99 of the replies completed in it, wrong answers,
 * losses and /proc/loadavg's 1-minute figure at its end.
 *
 * Replies are matched by (socket, Identifier) over up to 16 sockets (SO_RCVBUF 1 MiB
 * each). A reply whose code is not the expected one counts as wrong; a request with no
 * reply TIMEOUT_MS after it was sent counts as lost. Prints one JSON line.
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
#define MAX_INTERVALS 4096

typedef struct {
    uint8_t sock, expect;
    uint16_t len;
    uint32_t user;
    double due;
    const uint8_t *data;
} req_t;

typedef struct {
    long replies, wrong, lost;
    double load1, end;
} interval_t;

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double load1(void) {
    double v = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = -1.0;
        fclose(f);
    }
    return v;
}

/* p-th percentile in ms of the n sorted latencies */
static double pct(const double *sorted, size_t n, double p) {
    return n ? sorted[(size_t)(p * (n - 1))] * 1000.0 : 0.0;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 9) {
        fprintf(stderr,
                "usage: %s REQUESTS HOST PORT WINDOW TIMEOUT_MS [RATE START_EPOCH INTERVAL_S]\n",
                argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("open requests"); return 2; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf || fread(buf, 1, size, f) != (size_t)size) { perror("read"); return 2; }
    fclose(f);

    size_t cap = 1024, n = 0;
    req_t *reqs = malloc(cap * sizeof(req_t));
    int nsocks = 1;
    uint32_t users = 1;
    for (long off = 0; off + 12 <= size;) {
        if (n == cap) { cap *= 2; reqs = realloc(reqs, cap * sizeof(req_t)); }
        const uint8_t *h = buf + off;
        reqs[n].sock = h[0];
        reqs[n].expect = h[1];
        reqs[n].due = ((uint32_t)h[2] << 24 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 8 | h[5]) / 1e6;
        reqs[n].user = (uint32_t)h[6] << 24 | (uint32_t)h[7] << 16 | (uint32_t)h[8] << 8 | h[9];
        reqs[n].len = (uint16_t)((h[10] << 8) | h[11]);
        reqs[n].data = h + 12;
        if (reqs[n].user >= (1u << 24)) { fprintf(stderr, "user key too big\n"); return 2; }
        if (reqs[n].user + 1 > users) users = reqs[n].user + 1;
        if (reqs[n].sock >= MAX_SOCKS) { fprintf(stderr, "socket index too big\n"); return 2; }
        if (reqs[n].sock + 1 > nsocks) nsocks = reqs[n].sock + 1;
        off += 12 + reqs[n].len;
        n++;
    }
    int window = atoi(argv[4]);
    double timeout = atoi(argv[5]) / 1000.0;
    double rate = argc == 9 ? atof(argv[6]) : 0.0;
    double start_epoch = argc == 9 ? atof(argv[7]) : 0.0;
    double interval = argc == 9 ? atof(argv[8]) : 0.0;
    if (interval <= 0) interval = 1e9; /* one row for the whole run */

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
    double *sent_at = calloc(n ? n : 1, sizeof(double)); /* for the timeout */
    double *due_at = calloc(n ? n : 1, sizeof(double));  /* for the latency */
    double *lat = calloc(n ? n : 1, sizeof(double));
    int *lat_iv = calloc(n ? n : 1, sizeof(int));
    static interval_t iv[MAX_INTERVALS];
    long codes[256] = {0};
    uint8_t *busy = calloc(users, 1); /* a user with a request in flight */
    size_t next = 0, done = 0, nlat = 0, lost = 0, wrong = 0, late = 0, unsent = 0;
    size_t blocked = 0, blocked_at = (size_t)-1;
    int inflight = 0, cur_iv = 0;
    long first_wrong = -1;
    uint8_t rbuf[8192];

    if (rate > 0) { /* open loop: wait for the agreed wall-clock start */
        double wait = start_epoch - clock_s(CLOCK_REALTIME);
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    double start = now_s(), last_sweep = start;

    while (done < n) {
        double t = now_s();
        while (cur_iv < MAX_INTERVALS - 1 && t - start >= (cur_iv + 1) * interval) {
            iv[cur_iv].load1 = load1();
            iv[cur_iv].end = (cur_iv + 1) * interval;
            cur_iv++;
        }
        if (rate > 0 && next < n && t > start + reqs[n - 1].due + timeout) {
            unsent = n - next; /* give up on the tail: the run is bounded in time */
            done += unsent;
            next = n;
        }
        if (rate > 0 && next < n && next != blocked_at && start + reqs[next].due <= t &&
            (inflight >= window || slot[reqs[next].sock][reqs[next].data[1]] >= 0 ||
             busy[reqs[next].user])) {
            blocked++; /* due, but the server still holds the cap's worth of requests */
            blocked_at = next;
        }
        while (inflight < window && next < n) {
            req_t *r = &reqs[next];
            double due = rate > 0 ? start + r->due : t;
            if (due > t) break;
            uint8_t id = r->data[1];
            if (slot[r->sock][id] >= 0) break; /* wait for that id to come back */
            if (busy[r->user]) break;          /* and for the user's last answer */
            if (send(socks[r->sock], r->data, r->len, 0) < 0) {
                if (errno == EAGAIN || errno == ENOBUFS) break;
                perror("send");
                return 1;
            }
            if (rate > 0 && t - due > 0.010) late++;
            sent_at[next] = t;
            due_at[next] = due;
            slot[r->sock][id] = (long)next;
            busy[r->user] = 1;
            inflight++;
            next++;
        }
        int wait_ms = 5;
        if (rate > 0 && next < n && inflight < window) {
            double due_in = start + reqs[next].due - now_s();
            wait_ms = due_in <= 0 ? 0 : (due_in < 0.005 ? (int)(due_in * 1000) : 5);
        }
        int ready = poll(pfd, nsocks, wait_ms);
        t = now_s();
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
                    busy[reqs[idx].user] = 0;
                    lat_iv[nlat] = cur_iv;
                    lat[nlat++] = t - due_at[idx];
                    codes[rbuf[0]]++;
                    iv[cur_iv].replies++;
                    if (rbuf[0] != reqs[idx].expect) {
                        wrong++;
                        iv[cur_iv].wrong++;
                        if (first_wrong < 0) first_wrong = idx;
                    }
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
                        busy[reqs[idx].user] = 0;
                        lost++;
                        iv[cur_iv].lost++;
                        inflight--;
                        done++;
                    }
                }
        }
    }
    double elapsed = now_s() - start;
    iv[cur_iv].load1 = load1();
    iv[cur_iv].end = elapsed;

    printf("{\"sent\": %zu, \"unsent\": %zu, \"accept\": %ld, \"reject\": %ld, \"challenge\": %ld, "
           "\"wrong\": %zu, \"first_wrong\": %ld, \"lost\": %zu, \"late\": %zu, \"blocked\": %zu, "
           "\"elapsed\": %.4f, \"rps\": %.1f, \"offered_rps\": %.1f, \"intervals\": [",
           n - unsent, unsent, codes[2], codes[3], codes[11], wrong, first_wrong, lost, late, blocked, elapsed,
           nlat / elapsed, rate);
    double *tmp = calloc(nlat ? nlat : 1, sizeof(double));
    for (int k = 0; k <= cur_iv; k++) {
        size_t m = 0;
        for (size_t j = 0; j < nlat; j++)
            if (lat_iv[j] == k) tmp[m++] = lat[j];
        qsort(tmp, m, sizeof(double), cmp_double);
        double from = k * interval, len = iv[k].end - from;
        printf("%s{\"from_s\": %.1f, \"replies\": %ld, \"rps\": %.1f, \"p50_ms\": %.3f, "
               "\"p99_ms\": %.3f, \"wrong\": %ld, \"lost\": %ld, \"load1\": %.2f}",
               k ? ", " : "", from, iv[k].replies, len > 0 ? iv[k].replies / len : 0.0,
               pct(tmp, m, 0.50), pct(tmp, m, 0.99), iv[k].wrong, iv[k].lost, iv[k].load1);
    }
    qsort(lat, nlat, sizeof(double), cmp_double);
    printf("], \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
           pct(lat, nlat, 0.50), pct(lat, nlat, 0.90), pct(lat, nlat, 0.99),
           nlat ? lat[nlat - 1] * 1000.0 : 0.0);
    return 0;
}
