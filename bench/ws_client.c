/* Subscriber side of bench/ws.py: N WebSocket connections on one epoll loop.
 *
 * A Python subscriber spends more CPU per message than the gateway does, so on
 * a 2-core machine it, not the gateway, would be measured. This client only
 * finds frame boundaries and reads the publish time ("t":<unix seconds>) in each
 * event, so one core takes well over a million messages a second.
 *
 *   ws_client HOST PORT plain|sio N CHANNEL_PREFIX CHANNELS TOKEN
 *
 * Connection i subscribes to CHANNEL_PREFIX (CHANNELS == 1) or to
 * CHANNEL_PREFIX<i % CHANNELS>. Prints "ready" once every connection is
 * subscribed; then reads commands on stdin: "start" (reset counters), "mark"
 * (publishing has stopped: remember the count and the time), "stop" (print
 * {"count", "on_time", "drain", "p50", "p99", "max", "per_read"}: latencies and
 * the drain, the last delivery's time after the mark, in seconds; on_time the
 * count at the mark; per_read the event messages per read() that had any, i.e.
 * how many messages the gateway put in one write), "quit".
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 262144
#define BUCKETS 200000 /* 50 us buckets: up to 10 s */
#define BUCKET_US 50.0

typedef struct {
    int fd;
    int switched;
    int subscribed;
    size_t len;
    char *buf;
    char channel[64];
} conn_t;

static const char *host, *kind, *token;
static int port, nconns, nchannels;
static const char *prefix;
static uint64_t count, on_time, event_reads;
static double mark_at, last_rx;
static int marked;
static uint32_t *hist;
static int recording;
static int ready_count;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void send_frame(int fd, int opcode, const char *payload, size_t n) {
    char out[1024];
    size_t at = 0;
    out[at++] = (char)(0x80 | opcode);
    if (n < 126) {
        out[at++] = (char)(0x80 | n);
    } else {
        out[at++] = (char)(0x80 | 126);
        out[at++] = (char)(n >> 8);
        out[at++] = (char)(n & 0xff);
    }
    memset(out + at, 0, 4); /* zero mask: payload unchanged */
    at += 4;
    memcpy(out + at, payload, n);
    at += n;
    if (write(fd, out, at) < 0) perror("write");
}

static void subscribe(conn_t *c) {
    char msg[256];
    int n;
    if (kind[0] == 'p')
        n = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"channel\":\"%s\"}", c->channel);
    else
        n = snprintf(msg, sizeof msg, "42[\"subscribe\",{\"channel\":\"%s\"}]", c->channel);
    send_frame(c->fd, 1, msg, (size_t)n);
}

static void record(const char *p, size_t n) {
    const char *t = memmem(p, n, "\"t\":", 4);
    if (!t) {
        return;
    }
    count++;
    if (recording) {
        double at = now_s();
        double lat = at - strtod(t + 4, NULL);
        last_rx = at;
        long b = (long)(lat * 1e6 / BUCKET_US);
        if (b < 0) b = 0;
        if (b >= BUCKETS) b = BUCKETS - 1;
        hist[b]++;
    }
}

static void on_text(conn_t *c, const char *p, size_t n) {
    if (kind[0] == 'p') {
        if (!c->subscribed && memmem(p, n, "\"subscribed\"", 12)) {
            c->subscribed = 1;
            ready_count++;
        } else {
            record(p, n);
        }
        return;
    }
    /* Engine.IO / Socket.IO */
    if (n >= 2 && p[0] == '4' && p[1] == '2') {
        if (!c->subscribed && n > 15 && memcmp(p, "42[\"subscribed\"", 15) == 0) {
            c->subscribed = 1;
            ready_count++;
        } else {
            record(p, n);
        }
    } else if (n == 1 && p[0] == '2') {
        send_frame(c->fd, 1, "3", 1);
    } else if (n >= 1 && p[0] == '0') {
        char msg[1024];
        int m = snprintf(msg, sizeof msg, "40{\"token\":\"%s\"}", token);
        send_frame(c->fd, 1, msg, (size_t)m);
    } else if (n >= 2 && p[0] == '4' && p[1] == '0') {
        subscribe(c);
    }
}

static void handle(conn_t *c) {
    for (;;) {
        uint64_t before = count;
        ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
        if (r < 0) {
            if (errno == EAGAIN) return;
            perror("read");
            exit(1);
        }
        if (r == 0) {
            fprintf(stderr, "connection closed by the gateway\n");
            exit(1);
        }
        c->len += (size_t)r;
        size_t at = 0;
        if (!c->switched) {
            char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end) continue;
            if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "handshake refused: %.100s\n", c->buf);
                exit(1);
            }
            c->switched = 1;
            at = (size_t)(end - c->buf) + 4;
            if (kind[0] == 'p') subscribe(c);
        }
        while (c->len - at >= 2) {
            unsigned char b0 = (unsigned char)c->buf[at], b1 = (unsigned char)c->buf[at + 1];
            uint64_t n = b1 & 0x7f;
            size_t head = 2;
            if (n == 126) {
                if (c->len - at < 4) break;
                n = ((unsigned char)c->buf[at + 2] << 8) | (unsigned char)c->buf[at + 3];
                head = 4;
            } else if (n == 127) {
                if (c->len - at < 10) break;
                n = 0;
                for (int i = 0; i < 8; i++) n = (n << 8) | (unsigned char)c->buf[at + 2 + i];
                head = 10;
            }
            if (c->len - at < head + n) break;
            int opcode = b0 & 0x0f;
            if (opcode == 1) on_text(c, c->buf + at + head, n);
            else if (opcode == 9) send_frame(c->fd, 10, c->buf + at + head, n);
            else if (opcode == 8) {
                fprintf(stderr, "close frame from the gateway\n");
                exit(1);
            }
            at += head + n;
        }
        memmove(c->buf, c->buf + at, c->len - at);
        c->len -= at;
        if (count > before) event_reads++;
    }
}

static double percentile(double q, uint64_t total) {
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    for (long b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen > want) return (b + 1) * BUCKET_US / 1e6;
    }
    return BUCKETS * BUCKET_US / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT plain|sio N PREFIX CHANNELS TOKEN\n", argv[0]);
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    kind = argv[3];
    nconns = atoi(argv[4]);
    prefix = argv[5];
    nchannels = atoi(argv[6]);
    token = argv[7];
    hist = calloc(BUCKETS, sizeof *hist);
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    char request[2048];
    const char *path = kind[0] == 'p' ? "/api/v1/ws?token=" : "/api/v1/socket.io/?EIO=4&transport=websocket&t=";
    int reqlen = snprintf(request, sizeof request,
                          "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n",
                          path, kind[0] == 'p' ? token : "x", host, port);
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->buf = malloc(BUF);
        if (nchannels <= 1) snprintf(c->channel, sizeof c->channel, "%s", prefix);
        else snprintf(c->channel, sizeof c->channel, "%s%d", prefix, i % nchannels);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        if (write(c->fd, request, (size_t)reqlen) < 0) perror("write");
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
    fcntl(0, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in);
    int announced = 0;
    struct epoll_event events[512];
    char line[64];
    size_t line_len = 0;
    for (;;) {
        int n = epoll_wait(ep, events, 512, 1000);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                ssize_t r = read(0, line + line_len, sizeof line - line_len - 1);
                if (r <= 0) return 0;
                line_len += (size_t)r;
                line[line_len] = 0;
                char *nl;
                while ((nl = strchr(line, '\n'))) {
                    *nl = 0;
                    if (strcmp(line, "start") == 0) {
                        count = 0;
                        on_time = 0;
                        event_reads = 0;
                        marked = 0;
                        last_rx = 0;
                        memset(hist, 0, BUCKETS * sizeof *hist);
                        recording = 1;
                    } else if (strcmp(line, "mark") == 0) {
                        on_time = count;
                        mark_at = now_s();
                        marked = 1;
                    } else if (strcmp(line, "stop") == 0) {
                        recording = 0;
                        uint64_t total = 0;
                        for (long b = 0; b < BUCKETS; b++) total += hist[b];
                        double mx = 0;
                        for (long b = BUCKETS - 1; b >= 0; b--)
                            if (hist[b]) { mx = (b + 1) * BUCKET_US / 1e6; break; }
                        double drain = marked && last_rx > mark_at ? last_rx - mark_at : 0;
                        printf("{\"count\": %llu, \"on_time\": %llu, \"drain\": %.6f, "
                               "\"p50\": %.6f, \"p99\": %.6f, \"max\": %.6f, "
                               "\"per_read\": %.3f}\n",
                               (unsigned long long)count,
                               (unsigned long long)(marked ? on_time : count), drain,
                               total ? percentile(0.5, total) : 0,
                               total ? percentile(0.99, total) : 0, mx,
                               event_reads ? (double)count / (double)event_reads : 0);
                        fflush(stdout);
                    } else if (strcmp(line, "quit") == 0) {
                        return 0;
                    }
                    size_t rest = line_len - (size_t)(nl + 1 - line);
                    memmove(line, nl + 1, rest);
                    line_len = rest;
                    line[line_len] = 0;
                }
            } else {
                handle((conn_t *)events[i].data.ptr);
            }
        }
        if (!announced && ready_count == nconns) {
            printf("ready\n");
            fflush(stdout);
            announced = 1;
        }
    }
}
