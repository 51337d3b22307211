/*
 * The ceiling for benches/inetd.sh: the least a per-connection server can
 * do. Accept, vfork, put the connection on stdin/stdout, exec the command,
 * close the connection, reap. No limits, no environment, no logging.
 *
 * Usage: accept_loop PORT COMMAND [ARGS]...   (listens on 127.0.0.1:PORT)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: accept_loop PORT COMMAND [ARGS]...\n");
        return 64;
    }
    /* Children are reaped by the kernel: no zombies, no waitpid calls. */
    signal(SIGCHLD, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0) {
        perror("accept_loop: bind");
        return 71;
    }
    for (;;) {
        int connection = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (connection < 0)
            continue;
        pid_t pid = vfork();
        if (pid == 0) {
            dup2(connection, 0);
            dup2(connection, 1);
            execvp(argv[2], argv + 2);
            _exit(127);
        }
        close(connection);
    }
}
