/* pubsubsse bench load generator: holds many SSE connections on one core and counts events.
 *
 * It parses only what it must: the start of each line ("data:") and, inside data lines, the
 * publish timestamp  "ts":<ns since epoch>  to compute publish-to-receipt latency.
 *
 *   loadgen -p PORT -f PATHS [-d SECONDS] [-w WARMUP] [-s STALLED] [-c churn] [-r] [-b SOURCE_ADDRESS]
 *
 * PATHS holds one request path per line, one connection each. The first STALLED connections
 * never read after their request (a slow client). With -c, connections are closed as soon as the
 * server has answered anything and are reopened (churn) until the duration ends. With -b, connections
 * come from that local address (several loadgens on 127.0.0.x hold more than one address's ports). With -r, a
 * connection answered with another status than 200 is closed and opened again after a backoff (1 s, doubling
 * up to 8 s, as a browser's client retries a 503); "refused" counts those answers. Prints
 * "READY" on stderr once every connection has been written, and one JSON object on stdout at the end, which
 * SIGTERM brings forward.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_CAP 256

typedef struct {
    int fd;
    int stalled;
    int sent;
    int at_line_start;
    int match;        /* bytes of "data:" matched at line start, or 5 = inside a data line */
    int line_len;
    char line[LINE_CAP];
    long events;
    long updates;
    long bytes;
    int retries;
    double reopen_at; /* > 0: closed after a refusal, to be opened again then */
    char *path;
} conn_t;

static int port;
static struct sockaddr_in addr;
static int epfd;
static conn_t *conns;
static int nconns;
static double *lat;
static long nlat, lat_cap = 8000000;
static int measuring;
static long updates_measured, events_measured, opened, churned, refused;
static int churn, retry, waiting;
static volatile sig_atomic_t stop_now;
static struct sockaddr_in source;
static int bind_source;

static void on_term(int sig) { (void)sig; stop_now = 1; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int64_t wall_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void open_conn(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) { perror("socket"); exit(2); }
    if (c->stalled) {
        int small = 4096;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    if (bind_source && bind(c->fd, (struct sockaddr *)&source, sizeof source) < 0) { perror("bind"); exit(2); }
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); exit(2); }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n", c->path);
    if (write(c->fd, req, n) != n) { perror("write"); exit(2); }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    c->sent = 1;
    c->at_line_start = 0; /* the response head comes first; a line starts after its first \n */
    c->match = 0;
    c->line_len = 0;
    opened++;
    if (!c->stalled) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
}

static void data_line_done(conn_t *c) {
    c->events++;
    if (measuring) events_measured++;
    c->line[c->line_len] = 0;
    char *ts = strstr(c->line, "\"ts\":");
    if (!ts) return;
    c->updates++;
    if (!measuring) return;
    updates_measured++;
    int64_t sent = strtoll(ts + 5, NULL, 10);
    if (sent > 0 && nlat < lat_cap) lat[nlat++] = (wall_ns() - sent) / 1e6;
}

static void feed(conn_t *c, const char *buf, ssize_t n) {
    static const char key[] = "data:";
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (c->match == 5) {
            if (ch == '\n' || ch == '\r') {
                data_line_done(c);
                c->match = 0;
                c->at_line_start = 1;
            } else if (c->line_len < LINE_CAP - 1) {
                c->line[c->line_len++] = ch;
            }
            continue;
        }
        if (ch == '\n' || ch == '\r') { c->at_line_start = 1; c->match = 0; continue; }
        if (c->at_line_start && c->match < 5 && ch == key[c->match]) {
            c->match++;
            if (c->match == 5) c->line_len = 0;
            continue;
        }
        c->at_line_start = 0;
        c->match = 0;
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *paths_file = NULL;
    double duration = 10, warmup = 2;
    int stalled = 0;
    int opt;
    while ((opt = getopt(argc, argv, "p:f:d:w:s:crb:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'f': paths_file = optarg; break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 's': stalled = atoi(optarg); break;
        case 'c': churn = 1; break;
        case 'r': retry = 1; break;
        case 'b':
            source.sin_family = AF_INET;
            if (inet_pton(AF_INET, optarg, &source.sin_addr) != 1) { fprintf(stderr, "bad -b\n"); return 2; }
            bind_source = 1;
            break;
        default: fprintf(stderr, "bad option\n"); return 2;
        }
    }
    if (!port || !paths_file) { fprintf(stderr, "usage: loadgen -p PORT -f PATHS ...\n"); return 2; }
    struct rlimit rl = {200000, 200000};
    setrlimit(RLIMIT_NOFILE, &rl);
    FILE *f = fopen(paths_file, "r");
    if (!f) { perror(paths_file); return 2; }
    int cap = 1024;
    conns = calloc(cap, sizeof *conns);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        if (nconns == cap) { cap *= 2; conns = realloc(conns, cap * sizeof *conns); }
        memset(&conns[nconns], 0, sizeof *conns);
        conns[nconns].path = strdup(line);
        conns[nconns].stalled = nconns < stalled;
        nconns++;
    }
    fclose(f);
    lat = malloc(lat_cap * sizeof *lat);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    epfd = epoll_create1(0);
    signal(SIGTERM, on_term);
    for (int i = 0; i < nconns; i++) open_conn(&conns[i]);
    fprintf(stderr, "READY\n");
    fflush(stderr);

    double start = now_s(), measure_from = start + warmup, end = start + duration;
    static char buf[1 << 16];
    struct epoll_event events[512];
    while (1) {
        double t = now_s();
        if (t >= end || stop_now) break;
        if (!measuring && t >= measure_from) measuring = 1;
        if (waiting) {
            for (int i = 0; i < nconns; i++) {
                if (conns[i].reopen_at > 0 && conns[i].reopen_at <= t) {
                    conns[i].reopen_at = 0;
                    waiting--;
                    open_conn(&conns[i]);
                }
            }
        }
        int n = epoll_wait(epfd, events, 512, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t r;
            int first = c->bytes == 0;
            while ((r = read(c->fd, buf, sizeof buf)) > 0) {
                if (first && retry && r >= 12 && memcmp(buf + 9, "200", 3) != 0) break; /* "HTTP/1.1 503" */
                first = 0;
                c->bytes += r;
                feed(c, buf, r);
            }
            if (r > 0) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                refused++;
                double backoff = c->retries < 3 ? (double)(1 << c->retries) : 8.0;
                c->retries++;
                c->reopen_at = t + backoff;
                waiting++;
                continue;
            }
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                if (churn) open_conn(c);
                continue;
            }
            if (churn && c->bytes > 0) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->bytes = 0;
                churned++;
                open_conn(c);
            }
        }
    }
    double elapsed = now_s() - (measure_from < end ? measure_from : start);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    long min_updates = -1, with_events = 0;
    for (int i = stalled; i < nconns; i++) {
        if (min_updates < 0 || conns[i].updates < min_updates) min_updates = conns[i].updates;
        if (conns[i].events > 0) with_events++;
    }
    qsort(lat, nlat, sizeof *lat, cmp);
#define PCT(q) (nlat ? lat[(long)(nlat * (q))] : -1)
    double p10 = PCT(0.10), p50 = PCT(0.50), p90 = PCT(0.90), p99 = PCT(0.99), p999 = PCT(0.999);
    double pmax = nlat ? lat[nlat - 1] : -1;
    printf("{\"connections\": %d, \"stalled\": %d, \"with_events\": %ld, \"updates\": %ld, \"events\": %ld, "
           "\"seconds\": %.3f, \"updates_per_s\": %.1f, \"min_updates_per_conn\": %ld, \"latency_samples\": %ld, "
           "\"p10_ms\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, "
           " \"loadgen_cpu_s\": %.3f, \"opened\": %ld, "
           "\"churned\": %ld, \"refused\": %ld, \"waiting\": %d}\n",
           nconns, stalled, with_events, updates_measured, events_measured, elapsed,
           updates_measured / elapsed, min_updates, nlat, p10, p50, p90, p99, p999, pmax, cpu, opened, churned,
           refused, waiting);
    return 0;
}
