/* kv: the HTTP interface of Swiftlet's `kv` unikernel (guest/examples/kv) as a small static Linux
 * server, the service in the Podman + CRIU migration baseline (bench/podman_criu.py).
 *   POST /counter              increments the counter, returns the new value
 *   GET/PUT/DELETE /kv/<key>   one value (PUT body is the value; key 1-256 bytes, value <= 64 KiB)
 *   GET /_state                the whole state as one blob: u64 counter, u32 count, then per entry
 *                              u16 key length, key, u32 value length, value (big-endian)
 *   PUT /_state                replaces the whole state with such a blob
 * One request per connection (the answer carries `Connection: close`), a thread per connection (a
 * slow client does not hold up the others), one lock around the store.
 * Usage: kv [ADDRESS] [PORT]   (default 0.0.0.0 80).  Build: gcc -O2 -static -pthread -o kv kv.c */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_KEY 256
#define MAX_VALUE (64 * 1024)
#define MAX_ENTRIES 4096
#define MAX_REQUEST (MAX_VALUE * 64 + 8192)

struct entry { char *key; size_t key_len; unsigned char *value; size_t value_len; };
static struct entry entries[MAX_ENTRIES];
static size_t entry_count;
static uint64_t counter;
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;

static struct entry *find(const char *key, size_t len) {
    for (size_t i = 0; i < entry_count; i++)
        if (entries[i].key_len == len && memcmp(entries[i].key, key, len) == 0) return &entries[i];
    return NULL;
}

static void clear_all(void) {
    for (size_t i = 0; i < entry_count; i++) { free(entries[i].key); free(entries[i].value); }
    entry_count = 0;
}

static int set(const char *key, size_t key_len, const unsigned char *value, size_t value_len) {
    struct entry *e = find(key, key_len);
    if (!e) {
        if (entry_count == MAX_ENTRIES) return -1;
        e = &entries[entry_count++];
        e->key = malloc(key_len); memcpy(e->key, key, key_len); e->key_len = key_len;
        e->value = NULL;
    }
    free(e->value);
    e->value = malloc(value_len ? value_len : 1); memcpy(e->value, value, value_len); e->value_len = value_len;
    return 0;
}

static void send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n; len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *type, const void *body, size_t len) {
    const char *reason = status == 200 ? "OK" : status == 204 ? "No Content" : status == 400 ? "Bad Request"
        : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed" : status == 413 ? "Payload Too Large"
        : "Error";
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, reason, type, len);
    send_all(fd, head, (size_t)n);
    if (len) send_all(fd, body, len);
}

static void text(int fd, int status, const char *msg) { respond(fd, status, "text/plain", msg, strlen(msg)); }

static void put_be(unsigned char *p, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}
static uint64_t get_be(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | p[i];
    return v;
}

static void export_state(int fd) {
    size_t len = 12;
    for (size_t i = 0; i < entry_count; i++) len += 6 + entries[i].key_len + entries[i].value_len;
    unsigned char *blob = malloc(len), *p = blob;
    put_be(p, counter, 8); put_be(p + 8, entry_count, 4); p += 12;
    for (size_t i = 0; i < entry_count; i++) {
        put_be(p, entries[i].key_len, 2); memcpy(p + 2, entries[i].key, entries[i].key_len); p += 2 + entries[i].key_len;
        put_be(p, entries[i].value_len, 4); memcpy(p + 4, entries[i].value, entries[i].value_len); p += 4 + entries[i].value_len;
    }
    respond(fd, 200, "application/octet-stream", blob, len);
    free(blob);
}

static int import_state(const unsigned char *b, size_t len) {
    /* Validate the whole blob first: a malformed one changes nothing. */
    if (len < 12) return -1;
    uint64_t count = get_be(b + 8, 4);
    if (count > MAX_ENTRIES) return -1;
    size_t off = 12;
    for (uint64_t i = 0; i < count; i++) {
        if (off + 2 > len) return -1;
        size_t kl = get_be(b + off, 2); off += 2;
        if (kl == 0 || kl > MAX_KEY || off + kl + 4 > len) return -1;
        off += kl;
        size_t vl = get_be(b + off, 4); off += 4;
        if (vl > MAX_VALUE || off + vl > len) return -1;
        off += vl;
    }
    if (off != len) return -1;
    clear_all();
    counter = get_be(b, 8);
    off = 12;
    for (uint64_t i = 0; i < count; i++) {
        size_t kl = get_be(b + off, 2); const char *k = (const char *)b + off + 2; off += 2 + kl;
        size_t vl = get_be(b + off, 4); set(k, kl, b + off + 4, vl); off += 4 + vl;
    }
    return 0;
}

static void handle(int fd, char *request);
static void route(int fd, const char *method, const char *path, const unsigned char *body, size_t body_len);

static void serve(int fd) {
    char *request = malloc(MAX_REQUEST);
    handle(fd, request);
    free(request);
}

static void handle(int fd, char *request) {
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == 8192) { text(fd, 400, "header too long\n"); return; }
        ssize_t n = read(fd, request + have, 8192 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        have += (size_t)n;
        request[have] = 0;
        end = strstr(request, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - request) + 4, body_len = 0;
    for (char *line = strstr(request, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0) body_len = strtoul(line + 17, NULL, 10);
    if (body_len > MAX_REQUEST - head_len - 1) { text(fd, 413, "body too large\n"); return; }
    while (have < head_len + body_len) {
        ssize_t n = read(fd, request + have, head_len + body_len - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        have += (size_t)n;
    }
    char method[8] = {0}, path[MAX_KEY + 16] = {0};
    if (sscanf(request, "%7s %271s", method, path) != 2) { text(fd, 400, "bad request line\n"); return; }
    const unsigned char *body = (const unsigned char *)request + head_len;
    pthread_mutex_lock(&store_lock); /* answers are written under it too: small, and in counter order */
    route(fd, method, path, body, body_len);
    pthread_mutex_unlock(&store_lock);
}

static void route(int fd, const char *method, const char *path, const unsigned char *body, size_t body_len) {
    if (strncmp(path, "/kv/", 4) == 0) {
        const char *key = path + 4; size_t kl = strlen(key);
        if (kl == 0 || kl > MAX_KEY) { text(fd, 400, "key must be 1-256 bytes\n"); return; }
        struct entry *e = find(key, kl);
        if (!strcmp(method, "GET")) {
            if (!e) text(fd, 404, "no such key\n");
            else respond(fd, 200, "application/octet-stream", e->value, e->value_len);
        } else if (!strcmp(method, "PUT")) {
            if (body_len > MAX_VALUE) text(fd, 413, "value over 65536 bytes\n");
            else if (set(key, kl, body, body_len) < 0) text(fd, 413, "too many keys\n");
            else respond(fd, 204, "text/plain", "", 0);
        } else if (!strcmp(method, "DELETE")) {
            if (!e) { text(fd, 404, "no such key\n"); return; }
            free(e->key); free(e->value); *e = entries[--entry_count];
            respond(fd, 204, "text/plain", "", 0);
        } else text(fd, 405, "GET, PUT or DELETE\n");
    } else if (!strcmp(path, "/counter")) {
        if (strcmp(method, "POST")) { text(fd, 405, "POST\n"); return; }
        char out[32];
        int n = snprintf(out, sizeof out, "%llu", (unsigned long long)++counter);
        respond(fd, 200, "text/plain", out, (size_t)n);
    } else if (!strcmp(path, "/_state")) {
        if (!strcmp(method, "GET")) export_state(fd);
        else if (!strcmp(method, "PUT")) {
            if (import_state(body, body_len) < 0) text(fd, 400, "malformed state blob\n");
            else respond(fd, 204, "text/plain", "", 0);
        } else text(fd, 405, "GET or PUT\n");
    } else text(fd, 404, "not found\n");
}

static void *connection(void *arg) {
    int fd = (int)(intptr_t)arg;
    serve(fd);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    const char *address = argc > 1 ? argv[1] : "0.0.0.0";
    int port = argc > 2 ? atoi(argv[2]) : 80;
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof one); /* the address may arrive after the bind */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, address, &sa.sin_addr) != 1) { fprintf(stderr, "kv: bad address %s\n", address); return 2; }
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 128) < 0) { perror("kv: bind/listen"); return 1; }
    fprintf(stderr, "kv: listening on %s:%d\n", address, port);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        struct timeval tv = {.tv_sec = 10};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t thread;
        if (pthread_create(&thread, &attr, connection, (void *)(intptr_t)c) != 0) close(c);
    }
}
