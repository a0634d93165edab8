/*
 * thinkload: users who think between clicks, as a load generator that stays out of the way.
 *
 * Why not wrk: wrk's delay() keeps one timer per thinking connection in a linked list that its
 * event loop walks (with a clock read per timer) on every iteration. With 10,000 thinking users
 * that walk is the generator's main cost: measured on this machine, 0.34 cores at 850 req/s and
 * 0.62-0.78 cores at 8,500 req/s (90-400 us per request), against 0.2 cores for 9,000 req/s
 * without think time. On 2 cores shared with the gateway and PostgreSQL, that CPU is taken from
 * the system under test. Here the timers are a wheel of 1 ms slots: O(1) per request.
 *
 * The model (wrk's with bench/wrk/reserve_think.lua): N users, each with one keep-alive HTTP/1.1
 * connection, all opened before the clock starts (connect_us in the output), then thinks uniform 0..THINK_MAX ms (integer ms, as wrk's
 * math.random) before every request, the first included, and sends the next only after the
 * answer: a closed loop per user. THINK_MAX 0: no think time, every user's first request at once. A request's clock starts when its first byte is written, so think
 * time is never latency. User i always uses token i mod T (lines "user_id token" in the file).
 * One thread, epoll, no pipelining. Every answer's latency is kept, split by status.
 *
 * Output (stdout): one JSON line: duration_us, requests (answers), errors {connect, read, write,
 * timeout, status}, statuses {"201": n, ...}, latency_us per status and "all" {n, mean, p50,
 * p90, p99, p99.9, max}, cpu_s (this process's user + system time). With -o FILE, every answer
 * as a line "status latency_us sent_ms" too (in the order answered; sent_ms: when it was sent,
 * from the start), for percentiles over any statuses and latency over time.
 *
 *   thinkload -a 127.0.0.1 -p 8000 -c 10000 -d 20 -t 2000 -T 10000 -f tokens \
 *             -m POST -u /bookings/reserve -b '{"ticket_type_id": "...", "quantity": 1}'
 *
 * Errors: connect (refused, reset while connecting), read (the connection closed or failed
 * before an answer, or while the user thought: wrk counts that too; the user reconnects at its
 * next click), write, timeout (no full answer within -T ms: the connection is dropped and the
 * user thinks again), status (an answer this parser cannot delimit: no Content-Length).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WHEEL 65536 /* 1 ms slots: think times up to 65 s */
#define HEAD_MAX 8192 /* response headers must fit */

enum { IDLE, CONNECTING, SENDING, WAITING };

typedef struct {
    int fd, state;
    const char *req;
    int req_len, written;
    char *buf; /* response headers */
    int buf_len;
    long long body_left; /* -1: headers not complete */
    int status, close_after, want; /* want: clicked while still connecting */
    long long sent_ns, conn_ns, due_ms;
    int tnext; /* next user in the same wheel slot, -1 */
    uint64_t rng;
} user_t;

typedef struct {
    uint32_t us, at_ms; /* latency; when the request was sent, ms from the start */
    uint16_t status;
} sample_t;

static user_t *users;
static int n_users, think_max, wheel[WHEEL], ep;
static long long wheel_pos, start_ns; /* the next slot (ms) the wheel visits */
static long long timeout_ms;
static struct sockaddr_in addr;
static sample_t *samples;
static size_t n_samples, cap_samples;
static long long err_connect, err_read, err_write, err_timeout, err_status;

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void record(int status, long long sent_ns, long long ns) {
    if (n_samples == cap_samples) {
        cap_samples = cap_samples ? cap_samples * 2 : 1 << 20;
        samples = realloc(samples, cap_samples * sizeof *samples);
        if (!samples) die("realloc");
    }
    long long us = ns / 1000;
    samples[n_samples].us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    samples[n_samples].status = (uint16_t)status;
    samples[n_samples].at_ms = (uint32_t)((sent_ns - start_ns) / 1000000);
    n_samples++;
}

static void watch(user_t *u, int i, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, op, u->fd, &ev) < 0) die("epoll_ctl");
}

static void drop(user_t *u) {
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    u->state = IDLE;
    u->want = 0;
}

static void schedule(int i, long long now_ms) {
    user_t *u = &users[i];
    u->due_ms = now_ms + (think_max > 0 ? (long long)(next_rand(&u->rng) % (uint64_t)(think_max + 1)) : 0);
    if (u->due_ms < wheel_pos) u->due_ms = wheel_pos; /* that slot was visited already */
    int slot = (int)(u->due_ms % WHEEL);
    u->tnext = wheel[slot];
    wheel[slot] = i;
}

static void try_send(int i);

static void open_conn(int i) {
    user_t *u = &users[i];
    u->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0) die("socket");
    int one = 1;
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(u->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        err_connect++;
        drop(u);
        return;
    }
    u->state = CONNECTING;
    u->conn_ns = now_ns();
    watch(u, i, EPOLLOUT, EPOLL_CTL_ADD);
}

/* The user clicks: send its request (connecting first if it has no connection). */
static void click(int i, long long now_ms) {
    user_t *u = &users[i];
    if (u->fd < 0) {
        open_conn(i);
        if (u->fd < 0) schedule(i, now_ms); /* refused at once: think, then try again */
        u->want = u->fd >= 0;
        return;
    }
    if (u->state == CONNECTING) {
        u->want = 1;
        return;
    }
    u->state = SENDING;
    u->written = 0;
    u->sent_ns = 0;
    try_send(i);
}

static void try_send(int i) {
    user_t *u = &users[i];
    while (u->written < u->req_len) {
        ssize_t w = write(u->fd, u->req + u->written, (size_t)(u->req_len - u->written));
        if (w < 0) {
            if (errno == EAGAIN) {
                watch(u, i, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            err_write++;
            drop(u);
            schedule(i, now_ns() / 1000000);
            return;
        }
        if (u->sent_ns == 0) u->sent_ns = now_ns();
        u->written += (int)w;
    }
    if (u->state == SENDING) {
        u->state = WAITING;
        u->buf_len = 0;
        u->body_left = -1;
    }
}

/* Headers complete in u->buf[0..end): status, Content-Length, Connection: close. */
static int parse_head(user_t *u, int end) {
    if (end < 12 || memcmp(u->buf, "HTTP/1.", 7) != 0) return -1;
    u->status = atoi(u->buf + 9);
    long long length = -1;
    u->close_after = u->buf[7] == '0';
    char *p = u->buf, *stop = u->buf + end;
    while ((p = memchr(p, '\n', (size_t)(stop - p))) != NULL) {
        p++;
        if (stop - p > 15 && strncasecmp(p, "content-length:", 15) == 0)
            length = atoll(p + 15);
        else if (stop - p > 11 && strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) u->close_after = 1;
            if (strncasecmp(v, "keep-alive", 10) == 0) u->close_after = 0;
        }
    }
    if (length < 0) return -1;
    u->body_left = length;
    return 0;
}

static void readable(int i, long long now_ms) {
    user_t *u = &users[i];
    char sink[16384];
    for (;;) {
        char *into = u->body_left < 0 ? u->buf + u->buf_len : sink;
        size_t room = u->body_left < 0 ? (size_t)(HEAD_MAX - u->buf_len) : sizeof sink;
        if (room == 0) { /* headers too long */
            err_status++;
            drop(u);
            schedule(i, now_ms);
            return;
        }
        ssize_t r = read(u->fd, into, room);
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) { /* closed or failed: before an answer, or while the user thought */
            err_read++;
            int was_idle = u->state == IDLE;
            drop(u);
            if (!was_idle) schedule(i, now_ms);
            return;
        }
        if (u->state != WAITING) { /* bytes nobody asked for */
            err_status++;
            int was_idle = u->state == IDLE; /* then it is in the wheel already */
            drop(u);
            if (!was_idle) schedule(i, now_ms);
            return;
        }
        if (u->body_left < 0) {
            u->buf_len += (int)r;
            u->buf[u->buf_len] = 0;
            char *end = strstr(u->buf, "\r\n\r\n");
            if (!end) continue;
            int head = (int)(end + 4 - u->buf);
            if (parse_head(u, head) < 0) {
                err_status++;
                drop(u);
                schedule(i, now_ms);
                return;
            }
            r = u->buf_len - head; /* body bytes already read */
        }
        u->body_left -= r;
        if (u->body_left < 0) { /* more than one answer: never pipelined, so a broken server */
            err_status++;
            drop(u);
            schedule(i, now_ms);
            return;
        }
        if (u->body_left == 0) {
            record(u->status, u->sent_ns, now_ns() - u->sent_ns);
            u->state = IDLE;
            if (u->close_after) drop(u);
            if (think_max == 0) {
                click(i, now_ms);
            } else {
                schedule(i, now_ms);
            }
            return;
        }
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void print_latency(const char *name, uint32_t *v, size_t n, int first) {
    double mean = 0;
    for (size_t k = 0; k < n; k++) mean += v[k];
    mean = n ? mean / (double)n : 0;
    qsort(v, n, sizeof *v, cmp_u32);
#define PCT(p) (n ? v[(size_t)((double)(n - 1) * (p) / 100.0 + 0.5)] : 0)
    printf("%s\"%s\":{\"n\":%zu,\"mean\":%.1f,\"p50\":%u,\"p90\":%u,\"p99\":%u,\"p99.9\":%u,\"max\":%u}",
           first ? "" : ",", name, n, mean, PCT(50), PCT(90), PCT(99), PCT(99.9), n ? v[n - 1] : 0);
#undef PCT
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) die("read tokens");
    data[size] = 0;
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *tokens_file = NULL, *samples_file = NULL, *method = "GET", *path = "/", *body = "";
    int port = 8000, seconds = 10, opt;
    n_users = 100;
    timeout_ms = 10000;
    while ((opt = getopt(argc, argv, "a:p:c:d:t:T:f:m:u:b:o:")) != -1) {
        switch (opt) {
        case 'a': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': n_users = atoi(optarg); break;
        case 'd': seconds = atoi(optarg); break;
        case 't': think_max = atoi(optarg); break;
        case 'T': timeout_ms = atoll(optarg); break;
        case 'f': tokens_file = optarg; break;
        case 'm': method = optarg; break;
        case 'u': path = optarg; break;
        case 'b': body = optarg; break;
        case 'o': samples_file = optarg; break;
        default: fprintf(stderr, "usage: see the comment at the top of thinkload.c\n"); return 2;
        }
    }
    if (n_users < 1 || seconds < 1 || think_max < 0 || think_max >= WHEEL - 1000) {
        fprintf(stderr, "thinkload: need -c >= 1, -d >= 1, 0 <= -t < %d\n", WHEEL - 1000);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");

    /* Requests: one per token (or one without Authorization when no token file). */
    char **reqs = NULL;
    int *lens = NULL, n_reqs = 0;
    char *tokens = tokens_file ? read_file(tokens_file) : NULL;
    char *line = tokens, *save = NULL;
    for (;;) {
        char *tok = NULL;
        if (tokens) {
            line = strtok_r(line, "\n", &save);
            if (!line) break;
            char *space = strrchr(line, ' ');
            tok = space ? space + 1 : line;
            line = NULL;
        }
        char auth[2048] = "";
        if (tok) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
        char head[4096];
        int n = snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%sContent-Length: %zu\r\n\r\n", method, path, host,
                         port, auth, *body ? "Content-Type: application/json\r\n" : "", strlen(body));
        reqs = realloc(reqs, sizeof *reqs * (size_t)(n_reqs + 1));
        lens = realloc(lens, sizeof *lens * (size_t)(n_reqs + 1));
        reqs[n_reqs] = malloc((size_t)n + strlen(body) + 1);
        memcpy(reqs[n_reqs], head, (size_t)n);
        strcpy(reqs[n_reqs] + n, body);
        lens[n_reqs++] = n + (int)strlen(body);
        if (!tokens) break;
    }
    if (n_reqs == 0) {
        fprintf(stderr, "thinkload: no tokens in %s\n", tokens_file);
        return 2;
    }

    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < (rlim_t)n_users + 64) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    memset(wheel, -1, sizeof wheel);
    users = calloc((size_t)n_users, sizeof *users);
    char *bufs = malloc((size_t)n_users * (HEAD_MAX + 1));
    if (!users || !bufs) die("calloc");
    uint64_t seed = (uint64_t)now_ns() | 1;
    struct epoll_event events[1024];

    /* Everyone connects first, before the clock starts (users already on the site: the run
     * measures their clicks, not a storm of 10,000 handshakes), for at most -T ms. */
    long long connect_start = now_ns();
    int connecting = 0;
    for (int i = 0; i < n_users; i++) {
        user_t *u = &users[i];
        u->fd = -1;
        u->req = reqs[i % n_reqs];
        u->req_len = lens[i % n_reqs];
        u->buf = bufs + (size_t)i * (HEAD_MAX + 1);
        u->rng = seed + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        u->tnext = -1;
        open_conn(i);
        connecting += u->fd >= 0;
    }
    while (connecting > 0 && now_ns() - connect_start < timeout_ms * 1000000LL) {
        int n = epoll_wait(ep, events, 1024, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            user_t *u = &users[i];
            if (u->state != CONNECTING) continue;
            int soerr = 0;
            socklen_t len = sizeof soerr;
            getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (soerr || (events[k].events & (EPOLLERR | EPOLLHUP))) {
                err_connect++;
                drop(u);
            } else {
                watch(u, i, EPOLLIN, EPOLL_CTL_MOD);
                u->state = IDLE;
            }
            connecting--;
        }
    }
    for (int i = 0; i < n_users; i++)
        if (users[i].state == CONNECTING) {
            err_connect++;
            drop(&users[i]);
        }
    long long connect_us = (now_ns() - connect_start) / 1000;

    double cpu_start = cpu_seconds();
    long long start = start_ns = now_ns(), start_ms = start / 1000000, end_ms = start_ms + seconds * 1000LL;
    wheel_pos = start_ms;
    for (int i = 0; i < n_users; i++) { /* the first click: after a think, or at once without */
        if (think_max > 0)
            schedule(i, start_ms);
        else
            click(i, start_ms);
    }
    long long next_sweep = start_ms + 1000;
    for (;;) {
        long long now_ms = now_ns() / 1000000;
        if (now_ms >= end_ms) break;
        int wait = think_max > 0 ? 1 : 100;
        if (end_ms - now_ms < wait) wait = (int)(end_ms - now_ms);
        int n = epoll_wait(ep, events, 1024, wait);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        now_ms = now_ns() / 1000000;
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            user_t *u = &users[i];
            if (u->fd < 0) continue;
            if (u->state == CONNECTING) {
                int soerr = 0;
                socklen_t len = sizeof soerr;
                getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
                if (soerr || (events[k].events & (EPOLLERR | EPOLLHUP))) {
                    err_connect++;
                    int clicked = u->want; /* else its first click is in the wheel already */
                    drop(u);
                    if (clicked) schedule(i, now_ms);
                    continue;
                }
                watch(u, i, EPOLLIN, EPOLL_CTL_MOD);
                u->state = IDLE;
                if (u->want) {
                    u->want = 0;
                    click(i, now_ms);
                }
                continue;
            }
            if (u->state == SENDING && (events[k].events & EPOLLOUT)) {
                try_send(i);
                if (u->state == WAITING) watch(u, i, EPOLLIN, EPOLL_CTL_MOD);
                if (u->fd < 0) continue;
            }
            if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(i, now_ms);
        }
        /* The wheel: every slot from the last visit to now. Every user in a slot is due: think
         * times are shorter than a lap, and schedule() never files into a visited slot. */
        while (wheel_pos <= now_ms) {
            int slot = (int)(wheel_pos++ % WHEEL), i = wheel[slot];
            wheel[slot] = -1;
            while (i >= 0) {
                int next = users[i].tnext;
                users[i].tnext = -1;
                click(i, now_ms);
                i = next;
            }
        }
        if (now_ms >= next_sweep) { /* timeouts, once a second */
            next_sweep = now_ms + 1000;
            long long limit = now_ns() - timeout_ms * 1000000LL;
            for (int i = 0; i < n_users; i++) {
                user_t *u = &users[i];
                if ((u->state == WAITING || u->state == SENDING) && u->sent_ns && u->sent_ns < limit) {
                    err_timeout++;
                    drop(u);
                    schedule(i, now_ms);
                } else if (u->state == CONNECTING && u->conn_ns < limit) {
                    err_connect++;
                    int clicked = u->want;
                    drop(u);
                    if (clicked) schedule(i, now_ms);
                }
            }
        }
    }
    long long duration_us = (now_ns() - start) / 1000;
    double cpu = cpu_seconds() - cpu_start; /* the run's CPU, before the report's sorting and writing */

    if (samples_file) {
        FILE *f = fopen(samples_file, "w");
        if (!f) die(samples_file);
        for (size_t k = 0; k < n_samples; k++) fprintf(f, "%u %u %u\n", samples[k].status, samples[k].us, samples[k].at_ms);
        if (fclose(f) != 0) die(samples_file);
    }
    long long counts[1000] = {0};
    for (size_t k = 0; k < n_samples; k++) counts[samples[k].status < 1000 ? samples[k].status : 0]++;
    printf("{\"thinkload\":1,\"duration_us\":%lld,\"connect_us\":%lld,\"requests\":%zu,\"cpu_s\":%.3f,", duration_us,
           connect_us, n_samples, cpu);
    printf("\"errors\":{\"connect\":%lld,\"read\":%lld,\"write\":%lld,\"timeout\":%lld,\"status\":%lld},",
           err_connect, err_read, err_write, err_timeout, err_status);
    printf("\"statuses\":{");
    int first = 1;
    for (int s = 0; s < 1000; s++)
        if (counts[s]) printf("%s\"%d\":%lld", first ? "" : ",", s, counts[s]), first = 0;
    printf("},\"latency_us\":{");
    uint32_t *v = malloc((n_samples + 1) * sizeof *v);
    if (!v) die("malloc");
    for (size_t k = 0; k < n_samples; k++) v[k] = samples[k].us;
    print_latency("all", v, n_samples, 1);
    for (int s = 0; s < 1000; s++) {
        if (!counts[s]) continue;
        size_t m = 0;
        for (size_t k = 0; k < n_samples; k++)
            if (samples[k].status == s) v[m++] = samples[k].us;
        char name[8];
        snprintf(name, sizeof name, "%d", s);
        print_latency(name, v, m, 0);
    }
    printf("}}\n");
    return 0;
}
