/* The pid namespace's two waiting processes as one small program (issue #16, since 12-07).
 *
 * sandbox/pidns.py execs this from a memfd of mode 0111 in the launched child, before the
 * child enters the sandbox's user namespace: the kernel starts it not dumpable (its own uid
 * cannot read the file) and its memory belongs to the launcher's user namespace (the kernel's
 * mm->user_ns is fixed at exec), so no other process of the uid can attach to it or open its
 * namespace files, although it joins the sandbox's user namespace later (setns does not move
 * mm->user_ns). The Python forks it replaces kept about 3.4 MiB of copy-on-write pages.
 *
 * Protocol on the socket (fd in CLEANCOIN_PIDNS, a SOCK_SEQPACKET pair with the child C,
 * which carries on with the sandbox's steps):
 *   C -> waiter  "U" + SCM_RIGHTS(C's user namespace)  or "N" (no user namespace entered)
 *   waiter: setns(user), unshare(CLONE_NEWPID), fork PID 1
 *   waiter -> C  "P" + SCM_RIGHTS(pid_for_children)  or "E" + reason
 *   C: setns(pid), forks pid 2, which forks the component (pid 3) and ends, so that the
 *   component is PID 1's child (an orphan inside goes to PID 1); then
 *   C -> waiter  "X"; C ends.
 * PID 1 reaps everything inside, gets the component's status, gives what is left a grace,
 * and sends the status up a pipe; the waiter ends exactly as the component ended.
 *
 * CLEANCOIN_PIDNS="SOCKFD LAUNCHERPID CHILDPID GRACE_MS INIT_TITLE_LEN"; argv[0] is the
 * waiter's title for ps; PID 1 shows its first INIT_TITLE_LEN bytes plus " (init)".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SETUP_FAILED 126
#define COMPONENT 3     /* the component's pid in the namespace: PID 1, then the fork that made it */

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NFORWARDED (sizeof forwarded / sizeof forwarded[0])

static volatile pid_t forward_to = 0;

static void forward(int sig) {
    if (forward_to > 0)
        kill(forward_to, sig);
}

static void fail(const char *what) {
    /* Only before the component exists: stderr is the launched child's (dev/null or a pipe). */
    fprintf(stderr, "pid namespace waiter: %s: %s\n", what, strerror(errno));
    _exit(EXIT_SETUP_FAILED);
}

static void keep_only(int keep) {
    /* Every descriptor but 0, 1, 2 and `keep`. */
    if ((keep > 3 && syscall(SYS_close_range, 3, keep - 1, 0) != 0)
        || syscall(SYS_close_range, keep + 1, ~0U, 0) != 0)
        fail("close_range");
}

static void retire(int keep) {
    /* No capability (they hold all in the component's user namespace), no_new_privs, and no
     * descriptor but `keep`. */
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    int cap;
    keep_only(keep);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail("no_new_privs");
    for (cap = 0; cap <= CAP_LAST_CAP; cap++)
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);       /* EPERM without CAP_SETPCAP: then nothing to drop */
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0)
        fail("capset");
}

static void exit_like(int status) {
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit none = {0, 0};
        sigset_t set;
        setrlimit(RLIMIT_CORE, &none);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        signal(sig, SIG_DFL);
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        kill(getpid(), sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_SETUP_FAILED);
}

static ssize_t receive(int sock, char *buf, size_t len, int *fd) {
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {buf, len};
    struct msghdr msg = {0};
    struct cmsghdr *cmsg;
    ssize_t got;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    *fd = -1;
    do
        got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    for (cmsg = CMSG_FIRSTHDR(&msg); got > 0 && cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS
            && cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
    return got;
}

static void send_fd(int sock, const char *text, int fd) {
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {(void *)text, strlen(text)};
    struct msghdr msg = {0};
    struct cmsghdr *cmsg;
    memset(control, 0, sizeof control);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        fail("sending to the launched child");
}

static void refuse(int sock, const char *what) {
    char text[200];
    snprintf(text, sizeof text, "E%s: %s", what, strerror(errno));
    send_fd(sock, text, -1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* PID 1: reap every orphan, pass termination signals on to the component (pid 3: the fork
 * that made it in the namespace, pid 2, ends at once and leaves it to us); once the component
 * is gone, give what is left `grace_ms` to end by itself, woken by each child's end, then send
 * the component's wait status up the pipe and end: the kernel kills the rest. (PID 1 cannot
 * kill itself with a signal from inside, hence the pipe to the waiter, which re-raises it.) */
static void run_init(int status_out, int grace_ms) {
    sigset_t chld;
    double deadline;
    int status = EXIT_SETUP_FAILED << 8, found = 0;
    unsigned i;
    forward_to = COMPONENT;
    for (i = 0; i < NFORWARDED; i++)
        signal(forwarded[i], forward);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);     /* taken by sigwaitinfo: a blocked signal stays pending */
    while (!found) {
        pid_t pid;
        int st;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            if (pid == COMPONENT) {
                status = st;
                found = 1;
            }
        if (!found)
            sigwaitinfo(&chld, NULL);        /* or EINTR: a forwarded signal */
    }
    for (i = 0; i < NFORWARDED; i++)
        signal(forwarded[i], SIG_IGN);       /* nothing left to forward them to */
    deadline = now() + grace_ms / 1000.0;
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        double left;
        struct timespec wait;
        if (pid > 0)
            continue;
        if (pid < 0 && errno == ECHILD)
            break;
        left = deadline - now();
        if (left <= 0)
            break;
        wait.tv_sec = (time_t)left;
        wait.tv_nsec = (long)((left - wait.tv_sec) * 1e9);
        sigtimedwait(&chld, NULL, &wait);
    }
    if (write(status_out, &status, sizeof status) != sizeof status)
        _exit(EXIT_SETUP_FAILED);
    _exit(0);
}

static void set_init_title(char *title, size_t title_len, size_t area) {
    static const char suffix[] = " (init)";
    if (title_len + sizeof suffix <= area) {
        memcpy(title + title_len, suffix, sizeof suffix);
        memset(title + title_len + sizeof suffix, 0, area - title_len - sizeof suffix);
    }
    prctl(PR_SET_NAME, "pidns init", 0, 0, 0);
}

int main(int argc, char **argv) {
    const char *config = getenv("CLEANCOIN_PIDNS");
    int sock, grace_ms, ns_fd, pipefd[2];
    long launcher, child, title_len;
    pid_t init = 0, pid;
    char buf[64];
    ssize_t got;
    int status, child_status = -1, init_status = 0, component_status;
    unsigned i;

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);             /* already so for any uid but root's */
    if (argc < 1 || !config
        || sscanf(config, "%d %ld %ld %d %ld", &sock, &launcher, &child, &grace_ms, &title_len) != 5) {
        fprintf(stderr, "pid namespace waiter: started without its configuration\n");
        return EXIT_SETUP_FAILED;
    }
    prctl(PR_SET_NAME, "pidns waiter", 0, 0, 0);
    if (launcher > 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != launcher))
        _exit(EXIT_SETUP_FAILED);                    /* the launcher is gone */
    signal(SIGCHLD, SIG_DFL);                        /* a launcher's SIG_IGN would lose statuses */

    got = receive(sock, buf, sizeof buf - 1, &ns_fd);
    if (got <= 0)
        goto child_ended;                            /* C failed a step before the pid namespace */
    if (buf[0] == 'U' && (ns_fd < 0 || setns(ns_fd, CLONE_NEWUSER) != 0)) {
        refuse(sock, "joining the component's user namespace");
        goto child_ended;
    }
    if (ns_fd >= 0)
        close(ns_fd);
    if (unshare(CLONE_NEWPID) != 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        refuse(sock, "unshare(CLONE_NEWPID)");
        goto child_ended;
    }
    init = fork();
    if (init < 0) {
        refuse(sock, "fork of PID 1");
        goto child_ended;
    }
    if (init == 0) {
        struct pollfd pfd = {pipefd[1], POLLOUT, 0};
        close(pipefd[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        /* The waiter gone before the prctl: its end of the pipe is closed (POLLERR). */
        if (poll(&pfd, 1, 0) < 0 || (pfd.revents & (POLLERR | POLLHUP)))
            _exit(0);
        set_init_title(argv[0], (size_t)title_len, strlen(argv[0]) + 1);
        retire(pipefd[1]);
        run_init(pipefd[1], grace_ms);
    }
    close(pipefd[1]);
    ns_fd = open("/proc/self/ns/pid_for_children", O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
        refuse(sock, "opening /proc/self/ns/pid_for_children");
        goto child_ended;
    }
    send_fd(sock, "P", ns_fd);
    close(ns_fd);
    got = receive(sock, buf, sizeof buf - 1, &ns_fd);
    if (got < 1 || buf[0] != 'X')
        goto child_ended;                            /* C failed in between */
    /* The component runs, PID 1's child. Signals go to PID 1, which passes them on; before,
     * their default ended us (and C and PID 1 with us). */
    forward_to = init;
    for (i = 0; i < NFORWARDED; i++)
        signal(forwarded[i], forward);
    retire(pipefd[0]);
    for (;;) {
        pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0 || pid == init)
            break;
        /* C: it ended after it told us (status 0) */
    }
    init_status = pid == init ? status : EXIT_SETUP_FAILED << 8;
    do
        got = read(pipefd[0], &component_status, sizeof component_status);
    while (got < 0 && errno == EINTR);
    /* No status: PID 1 was killed (from outside); the component was killed with its namespace. */
    exit_like(got == sizeof component_status ? component_status : init_status);

child_ended:
    /* C ended (or failed) before the component existed: end as it did. */
    close(sock);
    if (init > 0)
        kill(init, SIGKILL);
    while ((pid = waitpid(-1, &status, 0)) != -1 || errno == EINTR)
        if (pid == child)
            child_status = status;
    exit_like(child_status == -1 ? EXIT_SETUP_FAILED << 8 : child_status);
    return EXIT_SETUP_FAILED;
}
