/* RadSec load generator for scripts/bench/radius --radsec: replays pre-encoded RADIUS
 * packets over persistent TLS connections (OpenSSL), one thread per connection.
 *
 * Usage: tlsloadgen REQUESTS_FILE PORT CONNECTIONS WINDOW CERT KEY CA ALPN TIMEOUT_MS
 * REQUESTS_FILE: records of [u8 connection][u16 big-endian length][packet].
 * WINDOW requests in flight in total, spread evenly over the connections; ALPN "-" for
 * none. Replies are matched per connection by Identifier (classic RadSec) or Token
 * (ALPN radius/1.1). Prints one JSON line like loadgen.c: requests/s, p50/p99 in ms,
 * replies by code, sent, lost. Every read waits at most TIMEOUT_MS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

typedef struct { uint16_t len; const uint8_t *data; } req_t;

typedef struct {
    SSL *ssl;
    req_t *reqs;
    size_t n, window;
    int radius11;
    double *lat;      /* per request, indexed by its position in reqs */
    double *sent_at;  /* likewise */
    size_t done, counts[256];
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int read_exactly(SSL *ssl, uint8_t *buf, int n) {
    int got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

/* Which request a reply answers: the Token (RADIUS/1.1) or the Identifier, searched
 * among the requests in flight (oldest first). */
static size_t match(conn_t *c, const uint8_t *reply, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) {
        if (c->lat[i] >= 0) continue;
        const uint8_t *q = c->reqs[i].data;
        if (c->radius11 ? memcmp(q + 4, reply + 4, 4) == 0 : q[1] == reply[1]) return i;
    }
    return (size_t)-1;
}

static void *run(void *arg) {
    conn_t *c = arg;
    size_t next = 0, oldest = 0;
    uint8_t buf[4096];
    while (c->done < c->n) {
        while (next < c->n && next - c->done < c->window) {
            c->sent_at[next] = now_s();
            if (SSL_write(c->ssl, c->reqs[next].data, c->reqs[next].len) <= 0) return NULL;
            next++;
        }
        if (read_exactly(c->ssl, buf, 4) < 0) return NULL;
        int len = (buf[2] << 8) | buf[3];
        if (len < 20 || len > 4096 || read_exactly(c->ssl, buf + 4, len - 4) < 0) return NULL;
        size_t i = match(c, buf, oldest, next);
        if (i == (size_t)-1) continue;
        c->lat[i] = now_s() - c->sent_at[i];
        c->counts[buf[0]]++;
        c->done++;
        while (oldest < next && c->lat[oldest] >= 0) oldest++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: %s REQUESTS PORT CONNECTIONS WINDOW CERT KEY CA ALPN TIMEOUT_MS\n",
                argv[0]);
        return 2;
    }
    int port = atoi(argv[2]), nconn = atoi(argv[3]), window = atoi(argv[4]);
    const char *alpn = argv[8];
    int timeout_ms = atoi(argv[9]);
    if (nconn < 1 || nconn > MAX_CONNS || window < nconn) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror("requests"); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(size);
    if (fread(data, 1, size, f) != (size_t)size) return 1;
    fclose(f);

    static conn_t conns[MAX_CONNS];
    size_t total = 0;
    for (long pos = 0; pos + 3 <= size;) {
        uint16_t len = (data[pos + 1] << 8) | data[pos + 2];
        conn_t *c = &conns[data[pos] % nconn];
        c->reqs = realloc(c->reqs, (c->n + 1) * sizeof(req_t));
        c->reqs[c->n++] = (req_t){len, data + pos + 3};
        total++;
        pos += 3 + len;
    }

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[5]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[6], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, argv[7], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int radius11 = strcmp(alpn, "radius/1.1") == 0;
    if (strcmp(alpn, "-") != 0) {
        unsigned char wire[64];
        size_t l = strlen(alpn);
        wire[0] = (unsigned char)l;
        memcpy(wire + 1, alpn, l);
        SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)l + 1);
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    for (int k = 0; k < nconn; k++) {
        conn_t *c = &conns[k];
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { perror("connect"); return 1; }
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, fd);
        if (SSL_connect(c->ssl) != 1) { ERR_print_errors_fp(stderr); return 1; }
        c->window = (size_t)(window / nconn);
        c->radius11 = radius11;
        c->lat = malloc((c->n + 1) * sizeof(double));
        c->sent_at = malloc((c->n + 1) * sizeof(double));
        for (size_t i = 0; i < c->n; i++) c->lat[i] = -1;
    }
    pthread_t threads[MAX_CONNS];
    double start = now_s();
    for (int k = 0; k < nconn; k++) pthread_create(&threads[k], NULL, run, &conns[k]);
    for (int k = 0; k < nconn; k++) pthread_join(threads[k], NULL);
    double elapsed = now_s() - start;

    double *all = malloc((total + 1) * sizeof(double));
    size_t done = 0, accept = 0, reject = 0, challenge = 0;
    for (int k = 0; k < nconn; k++) {
        conn_t *c = &conns[k];
        for (size_t i = 0; i < c->n; i++)
            if (c->lat[i] >= 0) all[done++] = c->lat[i];
        accept += c->counts[2];
        reject += c->counts[3];
        challenge += c->counts[11];
        SSL_shutdown(c->ssl);
    }
    qsort(all, done, sizeof(double), cmp_double);
    double p50 = done ? all[done / 2] * 1000 : 0, p99 = done ? all[(size_t)(done * 0.99)] * 1000 : 0;
    printf("{\"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"accept\": %zu, \"reject\": %zu, "
           "\"challenge\": %zu, \"sent\": %zu, \"lost\": %zu}\n",
           done / elapsed, p50, p99, accept, reject, challenge, total, total - done);
    return 0;
}
