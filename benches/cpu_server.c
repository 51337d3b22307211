/*
 * A CPU-bound, single-threaded HTTP server for benches/workers.sh: one
 * connection at a time, each answered after BURN ms of the process's own
 * CPU time (not wall time: a request costs the same CPU however busy the
 * machine is), then closed ("Connection: close").
 *
 * Usage: cpu_server [--fd N] [--burn-ms MS] [--boot-ms MS]
 *   --fd       the listening socket, as circus passes it ($(circus.sockets.NAME));
 *              without it, fd 3 by the systemd protocol (LISTEN_FDS, LISTEN_PID),
 *              as sockhold passes it
 *   --burn-ms  CPU time spent on each request                  [2]
 *   --boot-ms  sleep this long before the first accept, as a slow start-up;
 *              it sends no READY=1                              [0]
 *
 * Answers every request with "pid=PID\n". SIGTERM stops it gracefully: at
 * once while it waits for a connection or boots, after the answer in hand
 * while it serves one, so that no connection it took is lost.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Set by SIGTERM, which is blocked except while the server waits in
 * ppoll(2): so it never cuts a request short, and never lands between an
 * accept and the answer. */
static volatile sig_atomic_t stop;

static void on_term(int signo) {
    (void)signo;
    stop = 1;
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Spin until this process has used `ms` more of CPU. The clock is read
 * every few thousand rounds: a CPU-time clock is a real system call (no vDSO). */
static volatile unsigned long sink;
static void burn(double ms) {
    double until = cpu_seconds() + ms / 1000;
    unsigned long x = sink;
    do {
        for (int i = 0; i < 20000; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
    } while (cpu_seconds() < until);
    sink = x;
}

static int listen_fd_from_environment(void) {
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || atol(pid) != (long)getpid() || atoi(fds) < 1) {
        fprintf(stderr, "cpu_server: no --fd and no LISTEN_FDS for this process\n");
        exit(64);
    }
    return 3; /* SD_LISTEN_FDS_START, see sd_listen_fds(3) */
}

static void serve(int fd, double burn_ms, const char *answer, size_t answer_length) {
    /* Read the request head (wrk and the reload client send it at once). */
    char request[4096];
    size_t got = 0;
    while (got < sizeof request - 1) {
        ssize_t n = read(fd, request + got, sizeof request - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        got += n;
        request[got] = 0;
        if (strstr(request, "\r\n\r\n"))
            break;
    }
    burn(burn_ms);
    for (size_t sent = 0; sent < answer_length;) {
        ssize_t n = write(fd, answer + sent, answer_length - sent);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        sent += n;
    }
}

int main(int argc, char **argv) {
    int listen_fd = -1;
    double burn_ms = 2, boot_ms = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fd") && i + 1 < argc)
            listen_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--burn-ms") && i + 1 < argc)
            burn_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--boot-ms") && i + 1 < argc)
            boot_ms = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: cpu_server [--fd N] [--burn-ms MS] [--boot-ms MS]\n");
            return 64;
        }
    }
    if (listen_fd < 0)
        listen_fd = listen_fd_from_environment();

    struct sigaction action = {.sa_handler = on_term};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone before the answer: EPIPE, not death */
    sigset_t term, waiting_mask;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &waiting_mask);
    sigdelset(&waiting_mask, SIGTERM); /* the mask while waiting */
    /* Non-blocking, as Go's net.FileListener and nginx make an inherited
     * listener: every idle worker wakes in ppoll for a connection and all
     * but one find none; a blocking accept would then hold them with
     * SIGTERM blocked. The flag is on the open file description, shared
     * with the supervisor and the other workers; circus sets it anyway. */
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);

    char body[64], answer[256];
    int body_length = snprintf(body, sizeof body, "pid=%ld\n", (long)getpid());
    int answer_length = snprintf(answer, sizeof answer,
                                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                                 body_length, body);

    if (boot_ms > 0) {
        /* The boot: SIGTERM ends it at once. */
        struct timespec t = {(time_t)(boot_ms / 1000), (long)((boot_ms - (long)(boot_ms / 1000) * 1000) * 1e6)};
        if (ppoll(NULL, 0, &t, &waiting_mask) < 0 && stop)
            return 0;
    }
    struct pollfd wait = {.fd = listen_fd, .events = POLLIN};
    for (;;) {
        sigset_t pending;
        sigpending(&pending);
        if (stop || sigismember(&pending, SIGTERM))
            return 0;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            serve(fd, burn_ms, answer, (size_t)answer_length);
            close(fd);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            ppoll(&wait, 1, NULL, &waiting_mask); /* EINTR: SIGTERM came */
        else if (errno != EINTR && errno != ECONNABORTED) {
            perror("cpu_server: accept");
            return 71;
        }
    }
}

