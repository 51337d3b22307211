/*
 * Load generator for benches/inetd.sh: every connection is fresh (connect,
 * send one line, read the echo, close), as a per-connection server sees
 * them; keep-alive tools such as wrk measure something else.
 *
 * Usage: connect_load [-c THREADS] [-d SECONDS] [-n CONNECTIONS] [-h MS] HOST PORT
 *   -c  connections in flight at once (one thread each)      [8]
 *   -d  stop starting connections after this many seconds   [5]
 *   -n  stop after this many connections in total            [no limit]
 *   -h  hold each connection open this long after the echo   [0]
 *
 * Prints one line: ok=N failed=N seconds=S rate=R/s max_held=M
 * max_held is the most connections that had their echo and were still open
 * at the same time: with `cat` as the handler, the most handlers alive.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage target;
static socklen_t target_length;
static double deadline;
static long limit = -1;
static long hold_ms;
static atomic_long started, ok, failed, held, max_held;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int one_connection(void) {
    int fd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval timeout = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (connect(fd, (struct sockaddr *)&target, target_length) < 0) {
        close(fd);
        return -1;
    }
    static const char line[] = "ping\n";
    if (write(fd, line, sizeof line - 1) != sizeof line - 1) {
        close(fd);
        return -1;
    }
    char answer[64];
    size_t got = 0;
    while (got < sizeof line - 1) {
        ssize_t n = read(fd, answer + got, sizeof answer - got);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        got += n;
    }
    if (memcmp(answer, line, sizeof line - 1) != 0) {
        close(fd);
        return -1;
    }
    if (hold_ms > 0) {
        long now_held = atomic_fetch_add(&held, 1) + 1;
        long seen = atomic_load(&max_held);
        while (now_held > seen && !atomic_compare_exchange_weak(&max_held, &seen, now_held)) {
        }
        struct timespec pause = {.tv_sec = hold_ms / 1000, .tv_nsec = (hold_ms % 1000) * 1000000};
        nanosleep(&pause, NULL);
        atomic_fetch_sub(&held, 1);
    }
    close(fd);
    return 0;
}

static void *worker(void *unused) {
    (void)unused;
    while (now() < deadline) {
        if (limit >= 0 && atomic_fetch_add(&started, 1) >= limit)
            break;
        if (one_connection() == 0)
            atomic_fetch_add(&ok, 1);
        else
            atomic_fetch_add(&failed, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    long threads = 8;
    double seconds = 5;
    int option;
    while ((option = getopt(argc, argv, "c:d:n:h:")) != -1) {
        switch (option) {
        case 'c': threads = atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': limit = atol(optarg); break;
        case 'h': hold_ms = atol(optarg); break;
        default: return 64;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: connect_load [-c THREADS] [-d SECONDS] [-n CONNECTIONS] [-h MS] HOST PORT\n");
        return 64;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&target;
    int port = atoi(argv[optind + 1]);
    if (inet_pton(AF_INET, argv[optind], &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        target_length = sizeof *v4;
    } else if (inet_pton(AF_INET6, argv[optind], &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        target_length = sizeof *v6;
    } else {
        fprintf(stderr, "connect_load: bad address %s\n", argv[optind]);
        return 64;
    }
    pthread_t *ids = calloc(threads, sizeof *ids);
    double start = now();
    deadline = start + seconds;
    for (long i = 0; i < threads; i++) {
        if (pthread_create(&ids[i], NULL, worker, NULL) != 0) {
            perror("connect_load: pthread_create");
            return 71;
        }
    }
    for (long i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    double elapsed = now() - start;
    printf("ok=%ld failed=%ld seconds=%.2f rate=%.0f/s max_held=%ld\n", atomic_load(&ok),
           atomic_load(&failed), elapsed, atomic_load(&ok) / elapsed, atomic_load(&max_held));
    return 0;
}
