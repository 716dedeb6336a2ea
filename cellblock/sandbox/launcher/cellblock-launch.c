/*
 * cellblock-launch: set rlimits, drop to the slot's uid/gid, then exec bubblewrap.
 *
 * Replaces `prlimit … -- setpriv … --` (two dynamically linked execs, ~2.3 ms) with one static exec
 * (~0.3 ms). It runs as root for the few syscalls below and never parses anything but numbers.
 *
 *   cellblock-launch UID GID CPU_SOFT_S CPU_HARD_S FSIZE_B NOFILE STACK_B AS_B -- PROGRAM [ARGS…]
 *
 * AS_B = 0 leaves RLIMIT_AS alone. The environment variable CELLBLOCK_LAUNCH_CGROUPS, a ':'-separated list of
 * cgroup.procs files, is joined first (writing "0" moves the writer), so every process of the run, bwrap's
 * own included, is inside the run's cgroups from the start: if the worker dies mid-launch, nothing of the
 * run ever exists outside its limits. The variable is removed before exec. Order matters: limits and the capability bounding set are changed while
 * still root; then supplementary groups, gid and uid are dropped (root → non-root clears the permitted and
 * effective capability sets); then no_new_privs, so nothing exec'd can gain privileges again; then the
 * parent-death signal, so the sandbox dies with the worker that launched it.
 * Exit status 125 means the launcher itself failed (its message is on stderr); 127 that exec failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "cellblock-launch: %s: %s\n", what, strerror(errno));
    exit(125);
}

/* A decimal number, digits only (strtoull alone would accept blanks, signs and wrap "-1"), at most max. */
static unsigned long long number_max(const char *text, const char *name, unsigned long long max) {
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || errno != 0 || *end != '\0' || value > max) {
        fprintf(stderr, "cellblock-launch: bad %s: %s\n", name, text);
        exit(125);
    }
    return value;
}

static unsigned long long number(const char *text, const char *name) {
    return number_max(text, name, ULLONG_MAX);
}

static void join_cgroups(void) {
    const char *list = getenv("CELLBLOCK_LAUNCH_CGROUPS");
    if (list == NULL || *list == '\0') return;
    char buffer[4096];
    if (strlen(list) >= sizeof buffer) {
        fprintf(stderr, "cellblock-launch: CELLBLOCK_LAUNCH_CGROUPS too long\n");
        exit(125);
    }
    strcpy(buffer, list);
    for (char *save = NULL, *path = strtok_r(buffer, ":", &save); path; path = strtok_r(NULL, ":", &save)) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) die(path);
        close(fd);
    }
    unsetenv("CELLBLOCK_LAUNCH_CGROUPS");
}

static void limit(int resource, rlim_t soft, rlim_t hard, const char *name) {
    struct rlimit rl = {soft, hard};
    if (setrlimit(resource, &rl) != 0) die(name);
}

int main(int argc, char **argv) {
    if (argc < 11 || strcmp(argv[9], "--") != 0) {
        fprintf(stderr, "usage: cellblock-launch UID GID CPU_SOFT CPU_HARD FSIZE NOFILE STACK AS -- PROGRAM...\n");
        return 125;
    }
    pid_t parent = getppid();
    uid_t uid = (uid_t)number_max(argv[1], "uid", (uid_t)-2);
    gid_t gid = (gid_t)number_max(argv[2], "gid", (gid_t)-2);
    if (uid == 0 || gid == 0) {
        fprintf(stderr, "cellblock-launch: refusing to run as root\n");
        return 125;
    }
    join_cgroups();
    limit(RLIMIT_CPU, number(argv[3], "cpu soft"), number(argv[4], "cpu hard"), "RLIMIT_CPU");
    rlim_t fsize = number(argv[5], "fsize");
    limit(RLIMIT_FSIZE, fsize, fsize, "RLIMIT_FSIZE");
    rlim_t nofile = number(argv[6], "nofile");
    limit(RLIMIT_NOFILE, nofile, nofile, "RLIMIT_NOFILE");
    rlim_t stack = number(argv[7], "stack");
    limit(RLIMIT_STACK, stack, stack, "RLIMIT_STACK");
    limit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
    rlim_t as = number(argv[8], "as");
    if (as > 0) limit(RLIMIT_AS, as, as, "RLIMIT_AS");

    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("PR_CAPBSET_DROP");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) die("PR_CAP_AMBIENT");
    if (setgroups(0, NULL) != 0) die("setgroups");
    if (setresgid(gid, gid, gid) != 0) die("setresgid");
    if (setresuid(uid, uid, uid) != 0) die("setresuid");
    if (getuid() != uid || geteuid() != uid || getgid() != gid) {
        fprintf(stderr, "cellblock-launch: uid/gid did not change\n");
        return 125;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    /* If the worker dies (SIGKILL, OOM), bwrap must die with it: its own --die-with-parent only ties the
     * sandboxed child to bwrap. Set after the uid change (which clears it); kept across exec. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");
    if (getppid() != parent) {
        fprintf(stderr, "cellblock-launch: the worker is gone\n");
        return 125;
    }
    /* The program starts with no blocked and no ignored signals, whatever the worker process had (a Celery pool
     * process blocks and ignores some): signals sent to it (Piston's WebSocket) act as on a terminal. */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) die("sigprocmask");
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);  /* fails harmlessly for 32/33 (glibc's) */
    execv(argv[10], &argv[10]);
    fprintf(stderr, "cellblock-launch: exec %s: %s\n", argv[10], strerror(errno));
    return 127;
}
