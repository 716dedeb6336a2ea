/*
 * cellblock-slot: the init/exec helper of one warm sandbox slot (design "B" of warm-pool-notes.md).
 *
 * Theory of operation
 * -------------------
 * The host starts one long-lived bubblewrap per slot (same mounts, uid and namespaces as a fresh run, `/` and
 * `/dev` read-only, its own /dev/shm, *no* seccomp) whose command is this helper, holding CAP_SYS_ADMIN and
 * CAP_SETPCAP only inside the sandbox's user namespace (bwrap --cap-add). It talks to the host over a
 * SOCK_SEQPACKET socket (fd SOCK_FD), one message per request; the wire format is the "WIRE FORMAT" section
 * below and cellblock/sandbox/slotproto.py (keep the two in step).
 *
 * One run:
 *   host 'R' request + SCM_RIGHTS(stdin, stdout, stderr)
 *   helper clone(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC) → the run's init (pid 1 of a fresh pid ns):
 *     private mount propagation; fresh tmpfs at /tmp and /dev/shm and a fresh /proc (with bwrap's read-only
 *     /proc/sys, sysrq-trigger, irq, bus); sends 'P' — the kernel attaches SCM_CREDENTIALS with its pid as
 *     the *host* sees it; closes the socket (nothing of the run ever holds it afterwards) and blocks on its
 *     go-pipe.
 *   host writes that pid into the run's cgroups, sends 'G'; the helper writes the go byte.
 *   the init enters a new cgroup namespace (rooted at the run's cgroup, as a fresh sandbox's is), empties the
 *     capability bounding set, then every capability set; no_new_privs; the seccomp filter.
 *   the init forks the program (pid 2, in the init's session): stdio, every other fd closed, all signal dispositions
 *     default and the mask empty, umask, chdir, rlimits, execvp with exactly the request's environment.
 *   the init waits for the program and exits with its status (a signal death as 128+N, as bwrap reports it).
 *     When the init exits, the kernel kills everything left in its pid namespace; the helper's waitpid
 *     returns only after that, and it reports 'X'.
 * Between jobs the host sends 'W': the helper empties /box with a walk that never follows a link (it
 * descends by directory fd, O_NOFOLLOW, making mode-000 directories 0700 first) and reports 'w'.
 *
 * The helper exits (status 2) on anything unexpected — a malformed or out-of-order message, a failed
 * syscall of its own. The host then sees EOF, destroys the slot and builds a new one; it never repairs one.
 * The helper itself is outside every run's pid namespace, so a run can neither see nor signal it.
 *
 * Shared mode (design "A", isolation = "warm-shared", opt-in; argument MODE = "shared")
 * ---------------------------------------------------------------------------------------
 * The slot's bwrap then has *no* capabilities and loads the seccomp filter itself (BPF_FD is "-"): the helper
 * and every run live under it, so nothing is loaded per run. Each run is a plain fork() of the helper, in the
 * slot's own pid, mount and IPC namespaces (no init, no mounts: one fork and one exec per run):
 *   the child setsid()s, sends 'P' (same SCM_CREDENTIALS trick), closes the socket, waits for go — which the
 *   host writes straight to a pipe of its own, passed as a 4th fd with 'R' — and becomes the program
 *   (become_program, as above).
 *   the helper, a child subreaper, waits for it; then kill(-1, SIGKILL) + reap until nothing is left (kill(-1)
 *   never reaches the namespace's init, bwrap, nor the helper itself); wipes /tmp, /dev/shm, /dev/mqueue and
 *   every SysV object; and checks that nothing of its own was changed by the run, which shares its uid and so
 *   may signal, renice, re-pin or prlimit it: nice, scheduling policy, I/O priority, CPU affinity, every
 *   rlimit, and the mode, owner and xattrs of /tmp, /dev/shm and /dev/mqueue. 'X' goes out right after the
 *   kill (so the wipe is not the run's wall time), then 'c' with what the clean-up found (the T_* bits):
 *   anything but 0 and the host rebuilds the slot (the run's verdict stands).
 * What a run of this mode can still learn (documented trade-off): the pid counter and tmpfs inode numbers of
 * earlier runs, ctime/mtime of /tmp and /dev/shm, the helper's pid (its parent), and anything not listed above.
 *
 *   cellblock-slot SOCK_FD BPF_FD TMP_SIZE_BYTES [MODE]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/xattr.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- WIRE FORMAT (mirrors cellblock/sandbox/slotproto.py) -------------------------------------------------
 * All integers little-endian (x86-64 / aarch64 native). One SOCK_SEQPACKET message each.
 * host → helper
 *   'R' run:  u8 'R', u8[3] 0, u32 umask, u32 argc, u32 envc, u64 limits[6], then NUL-terminated strings:
 *             cwd, argv[argc], env[envc] ("KEY=VALUE"), filling the message exactly. SCM_RIGHTS: exactly 3 fds
 *             (stdin, stdout, stderr); shared mode: 4, the 4th the read end of the host's go pipe. limits: CPU soft s, CPU hard s, FSIZE bytes, NOFILE, STACK bytes,
 *             AS bytes (0 = leave unset).
 *   'G' go:   1 byte, only after the host received 'P' (shared mode: written to the go pipe instead).
 *   'W' wipe: 1 byte, between runs.
 *   'Q' quit: 1 byte.
 * helper → host
 *   'H' hello: 1 byte, once, when ready.
 *   'P' pid:  1 byte, sent by the run's init; the host reads the pid from SCM_CREDENTIALS.
 *   'X' exit: u8 'X', u8 kind, u8[2] 0, i32 value, i32 err (12 bytes).
 *             kind 0: value = the run's exit code (128+N for a signal death of the program; the init killed by
 *             signal N, e.g. the host's cgroup kill, also reports 128+N); kind 1: the init died before 'G'
 *             (value = its wait status). err: T_NET when TCP sockets outlived the run in the slot's network
 *             namespace (TIME_WAIT after a loopback connection: visible in /proc/net/tcp to the next run, and
 *             its port unbindable for 60 s) — the host rebuilds the slot; else 0.
 *   'c' cleaned (shared mode only, after every 'X'): u8 'c', u8[3] 0, i32 T_* bits (8 bytes); 0 = clean.
 *   'w' wiped: u8 'w', u8 ok (1/0), u8[2] 0, i32 errno (8 bytes).
 */
#define CB_REQ_HEADER 64
#define CB_NLIMITS 6
#define CB_MAX_MESSAGE (128 * 1024)
#define CB_MAX_STRINGS 8192
#define X_EXITED 0
#define X_EARLY 1
/* shared mode: what the clean-up after a run found ('c') */
#define T_SURVIVORS 1   /* processes still there after 2 s of kill(-1, SIGKILL) */
#define T_WIPE 2        /* /tmp, /dev/shm or /dev/mqueue could not be emptied */
#define T_SYSV 4        /* a SysV IPC object could not be removed */
#define T_SELF 8        /* the helper's nice, policy, I/O priority, affinity or rlimits changed */
#define T_DIRS 16       /* mode, owner or xattrs of /tmp, /dev/shm or /dev/mqueue changed */
#define T_NET 32        /* both modes, in 'X' err: TCP sockets left in the slot's network namespace */

enum { L_CPU_SOFT, L_CPU_HARD, L_FSIZE, L_NOFILE, L_STACK, L_AS };

struct request {
    uint32_t umask_bits;
    uint64_t limits[CB_NLIMITS];
    char *cwd;
    char **argv;  /* NULL-terminated, pointing into the message buffer */
    char **envp;
    int fds[4]; /* stdin, stdout, stderr; shared mode: the host's go pipe (read end) */
};

static int sock = -1;
static int shared_mode; /* design A: see "Shared mode" above */
static unsigned long long tmp_size;
static struct sock_fprog filter;
static char message[CB_MAX_MESSAGE + 1];

static void fail(const char *what) {
    fprintf(stderr, "cellblock-slot: %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void send_bytes(const void *data, size_t size) {
    ssize_t sent;
    do sent = send(sock, data, size, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent != (ssize_t)size) fail("send");
}

static uint32_t u32_at(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64_at(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Split `count` NUL-terminated strings starting at *pos; NULL when they do not fit exactly so far. */
static char **take_strings(char *end, char **pos, uint32_t count) {
    char **list = calloc((size_t)count + 1, sizeof *list);
    if (list == NULL) fail("calloc");
    for (uint32_t i = 0; i < count; i++) {
        char *nul = memchr(*pos, '\0', (size_t)(end - *pos));
        if (nul == NULL) { free(list); return NULL; }
        list[i] = *pos;
        *pos = nul + 1;
    }
    return list;
}

/* Parse an 'R' message of `size` bytes in `message`. 0 on success, -1 if malformed. */
int parse_request(char *buf, size_t size, struct request *req) {
    if (size < CB_REQ_HEADER || buf[0] != 'R' || buf[1] || buf[2] || buf[3]) return -1;
    req->umask_bits = u32_at(buf + 4);
    uint32_t argc = u32_at(buf + 8), envc = u32_at(buf + 12);
    if (req->umask_bits > 0777 || argc < 1 || argc > CB_MAX_STRINGS || envc > CB_MAX_STRINGS) return -1;
    for (int i = 0; i < CB_NLIMITS; i++) req->limits[i] = u64_at(buf + 16 + 8 * i);
    char *end = buf + size, *pos = buf + CB_REQ_HEADER;
    char *nul = memchr(pos, '\0', (size_t)(end - pos));
    if (nul == NULL || pos[0] != '/') return -1;
    req->cwd = pos;
    pos = nul + 1;
    req->argv = take_strings(end, &pos, argc);
    if (req->argv == NULL) return -1;
    req->envp = take_strings(end, &pos, envc);
    if (req->envp == NULL || pos != end || req->argv[0][0] == '\0') {
        free(req->argv);
        free(req->envp);
        return -1;
    }
    for (uint32_t i = 0; i < envc; i++)
        if (strchr(req->envp[i], '=') == NULL || req->envp[i][0] == '=') {
            free(req->argv);
            free(req->envp);
            return -1;
        }
    return 0;
}

/* ---- the run's init and program ---------------------------------------------------------------------- */

static void die_in_run(const char *what) {
    /* Before the program exists: the init exits, the helper reports X_EARLY, the host destroys the slot. */
    fprintf(stderr, "cellblock-slot(run): %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void mount_fresh(void) {
    char options[64];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die_in_run("make / private");
    snprintf(options, sizeof options, "size=%llu,mode=0755", tmp_size);
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) die_in_run("mount /tmp");
    if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) die_in_run("mount /dev/shm");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die_in_run("mount /proc");
    /* bwrap's --proc covers these with read-only binds; so do we (absent ones are skipped, as bwrap does). */
    static const char *const covered[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"};
    for (size_t i = 0; i < sizeof covered / sizeof *covered; i++) {
        if (access(covered[i], F_OK) != 0) continue;
        if (mount(covered[i], covered[i], NULL, MS_BIND | MS_REC, NULL) != 0) die_in_run("bind /proc part");
        if (mount(NULL, covered[i], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  NULL) != 0)
            die_in_run("remount /proc part read-only");
    }
}

static void drop_everything(void) {
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die_in_run("PR_CAPBSET_DROP");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) die_in_run("PR_CAP_AMBIENT");
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) die_in_run("capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die_in_run("PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0) != 0) die_in_run("PR_SET_SECCOMP");
}

static void limit(int resource, rlim_t soft, rlim_t hard) {
    struct rlimit rl = {soft, hard};
    if (setrlimit(resource, &rl) != 0) {
        fprintf(stderr, "cellblock-slot: setrlimit %d: %s\n", resource, strerror(errno));
        _exit(1);
    }
}

extern char **environ;

static void become_program(struct request *req) {
    /* Move the three fds above the 0-2 range first, so that dup2 never clobbers one it still needs. */
    int high[3];
    for (int i = 0; i < 3; i++) {
        high[i] = fcntl(req->fds[i], F_DUPFD, 10);
        if (high[i] < 0) _exit(1);
    }
    for (int i = 0; i < 3; i++)
        if (dup2(high[i], i) != i) _exit(1);
    syscall(SYS_close_range, 3U, ~0U, 0U);
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL); /* fails harmlessly for glibc's 32/33 */
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask((mode_t)req->umask_bits);
    if (chdir(req->cwd) != 0) {
        fprintf(stderr, "cellblock-slot: chdir %s: %s\n", req->cwd, strerror(errno));
        _exit(1);
    }
    limit(RLIMIT_CPU, req->limits[L_CPU_SOFT], req->limits[L_CPU_HARD]);
    limit(RLIMIT_FSIZE, req->limits[L_FSIZE], req->limits[L_FSIZE]);
    limit(RLIMIT_NOFILE, req->limits[L_NOFILE], req->limits[L_NOFILE]);
    limit(RLIMIT_STACK, req->limits[L_STACK], req->limits[L_STACK]);
    limit(RLIMIT_CORE, 0, 0);
    if (req->limits[L_AS] > 0) limit(RLIMIT_AS, req->limits[L_AS], req->limits[L_AS]);
    environ = req->envp;
    execvp(req->argv[0], req->argv);
    /* bwrap's own wording and status for a program that cannot be executed */
    fprintf(stderr, "bwrap: execvp %s: %s\n", req->argv[0], strerror(errno));
    _exit(1);
}

static int run_init(struct request *req, int go_read) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die_in_run("PR_SET_PDEATHSIG");
    /* A session of our own, which the program shares (session and group 1), as under bwrap --new-session. */
    if (setsid() < 0) die_in_run("setsid");
    mount_fresh();
    /* The kernel attaches our pid as the host sees it; after this nothing of the run holds the socket. */
    send_bytes("P", 1);
    close(sock);
    char go;
    ssize_t got;
    do got = read(go_read, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1) _exit(2);
    close(go_read);
    /* Now in the run's cgroups: a cgroup namespace rooted there shows "/" in /proc/self/cgroup, as a fresh
     * sandbox does (rooted at the slot's, it would show "/../run"). */
    if (unshare(CLONE_NEWCGROUP) != 0) die_in_run("unshare(CLONE_NEWCGROUP)");
    drop_everything();
    pid_t program = fork();
    if (program < 0) die_in_run("fork");
    if (program == 0) become_program(req);
    for (int i = 0; i < 3; i++) close(req->fds[i]);
    syscall(SYS_close_range, 0U, ~0U, 0U);
    for (;;) {
        int status;
        pid_t done = waitpid(-1, &status, 0);
        if (done < 0) {
            if (errno == EINTR) continue;
            _exit(2);
        }
        if (done != program) continue; /* an orphan reparented to us */
        /* Exiting kills everything left in this pid namespace (daemons, stragglers). */
        if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
        _exit(WEXITSTATUS(status));
    }
}

/* Shared mode: the run is this fork of the helper itself, in the slot's namespaces (seccomp is already on). */
static void run_shared(struct request *req, int go_read) { /* go_read: the host's pipe */
    if (setsid() < 0) die_in_run("setsid");
    send_bytes("P", 1);
    close(sock);
    char go;
    ssize_t got;
    do got = read(go_read, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1) _exit(2);
    become_program(req); /* closes go_read with every other fd */
}

static int clean_up_shared(int survivors);
static int kill_everything(void);

/* Whether any TCP or UDP socket is left in the slot's network namespace. All processes of the run are gone, so
 * anything counted is a closed connection the kernel still keeps (TIME_WAIT, FIN_WAIT…): runs share the slot's
 * network namespace in both modes. /proc/net/sockstat{,6} count per namespace ("inuse" and "tw"; ≈ 5 µs each);
 * /proc/net/tcp would list them too, but walks the machine-wide hash table (≈ 1 ms each, measured).
 * Unreadable or unparsable counts as "left" (the slot is rebuilt). */
static int tcp_sockets_left(void) {
    static const char *const tables[] = {"/proc/net/sockstat", "/proc/net/sockstat6"};
    for (size_t i = 0; i < 2; i++) {
        char buf[1024];
        int fd = open(tables[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT && i == 1) continue; /* no IPv6 */
            return 1;
        }
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got <= 0) return 1;
        buf[got] = '\0';
        int found = 0;
        for (char *line = buf; line != NULL && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            int inuse = 0, orphan = 0, tw = 0;
            if (sscanf(line, "TCP: inuse %d orphan %d tw %d", &inuse, &orphan, &tw) == 3 ||
                sscanf(line, "TCP6: inuse %d", &inuse) == 1 || sscanf(line, "UDP: inuse %d", &inuse) == 1 ||
                sscanf(line, "UDP6: inuse %d", &inuse) == 1) {
                found++;
                if (inuse != 0 || tw != 0) return 1; /* orphan is machine-wide: not ours to judge */
            }
        }
        if (found != 2) return 1; /* TCP + UDP, or TCP6 + UDP6 */
    }
    return 0;
}

/* ---- the helper ------------------------------------------------------------------------------------------ */

static void send_exit(int kind, int value, int err) {
    char out[12] = {'X', (char)kind, 0, 0};
    int32_t v = value, e = err;
    memcpy(out + 4, &v, 4);
    memcpy(out + 8, &e, 4);
    send_bytes(out, sizeof out);
}

static void handle_run(struct request *req) {
    int go[2];
    if (pipe2(go, O_CLOEXEC) != 0) fail("pipe2");
    /* fork-like clone (no new stack): the child continues here, as pid 1 of a new pid namespace;
     * shared mode: a plain fork, which becomes the program itself, and waits for go on the host's own pipe
     * (the 4th fd of 'R'): one hand-off less per run than relaying 'G' (each costs a wake-up of the helper) */
    pid_t init = shared_mode ? fork()
                             : (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | SIGCHLD, 0, 0, 0, 0);
    if (init < 0) fail("clone");
    if (init == 0) {
        close(go[1]);
        if (shared_mode) run_shared(req, req->fds[3]);
        _exit(run_init(req, go[0]));
    }
    close(go[0]);
    for (int i = 0; i < (shared_mode ? 4 : 3); i++) close(req->fds[i]);
    if (shared_mode) close(go[1]); /* unused: the host releases the run itself */
    int status;
    if (shared_mode) {
        /* The host writes go to the run directly. A host that cannot attach the run destroys the slot; one that
         * dies closes the pipe and the child exits at EOF. Either way we only wait here. */
        while (waitpid(init, &status, 0) < 0)
            if (errno != EINTR) fail("waitpid");
        int survivors = kill_everything() != 0 ? T_SURVIVORS : 0; /* before 'X': the host checks the cgroup */
        int net = tcp_sockets_left() ? T_NET : 0;
        send_exit(X_EXITED, WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), net);
        char out[8] = {'c', 0, 0, 0};
        int32_t taint = clean_up_shared(survivors);
        memcpy(out + 4, &taint, 4);
        send_bytes(out, sizeof out);
        return;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, init, 0);
    if (pidfd < 0) fail("pidfd_open");
    struct pollfd watch[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    int early = 0;
    for (;;) {
        if (poll(watch, 2, -1) < 0) {
            if (errno == EINTR) continue;
            fail("poll");
        }
        if (watch[1].revents) { early = 1; break; } /* the init died before the host said go */
        if (watch[0].revents) {
            char go_byte;
            ssize_t got = recv(sock, &go_byte, 1, 0);
            if (got != 1 || go_byte != 'G') {
                kill(init, SIGKILL);
                fail(got == 0 ? "host gone" : "expected G");
            }
            if (write(go[1], "g", 1) != 1) early = 1;
            break;
        }
    }
    close(go[1]);
    close(pidfd);
    while (waitpid(init, &status, 0) < 0)
        if (errno != EINTR) fail("waitpid");
    int net = tcp_sockets_left() ? T_NET : 0; /* runs share the slot's network namespace */
    if (early) send_exit(X_EARLY, status, net);
    else send_exit(X_EXITED, WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), net);
}

/* Empty the directory `root` (not removing it) without ever following a link. Iterative, so any depth costs
 * two fds: the walk keeps the *names* of the directories it is inside and climbs back with "..". */
int wipe_tree(const char *root) {
    int cur = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cur < 0) return errno;
    size_t depth = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    if (names == NULL) { close(cur); return ENOMEM; }
    int err = 0;
    for (;;) {
        int dup_fd = dup(cur);
        DIR *dir = dup_fd < 0 ? NULL : fdopendir(dup_fd);
        if (dir == NULL) { err = errno; if (dup_fd >= 0) close(dup_fd); break; }
        char *descend = NULL;
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            const char *name = entry->d_name;
            if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) continue;
            if (unlinkat(cur, name, 0) == 0) continue;
            struct stat st;
            if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) != 0) { err = errno; break; }
            if (!S_ISDIR(st.st_mode)) { err = EPERM; break; }
            if (unlinkat(cur, name, AT_REMOVEDIR) == 0) continue;
            descend = strdup(name);
            if (descend == NULL) err = ENOMEM;
            break;
        }
        closedir(dir);
        if (err) break;
        if (descend != NULL) {
            /* The run is over and nothing else writes here: a directory stays a directory meanwhile. */
            if (fchmodat(cur, descend, 0700, 0) != 0) { err = errno; free(descend); break; }
            int child = openat(cur, descend, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0) { err = errno; free(descend); break; }
            if (depth == cap) {
                char **grown = realloc(names, 2 * cap * sizeof *names);
                if (grown == NULL) { err = ENOMEM; free(descend); close(child); break; }
                names = grown;
                cap *= 2;
            }
            names[depth++] = descend;
            close(cur);
            cur = child;
            continue;
        }
        if (depth == 0) break; /* root is empty */
        int parent = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (parent < 0) { err = errno; break; }
        close(cur);
        cur = parent;
        char *name = names[--depth];
        if (unlinkat(cur, name, AT_REMOVEDIR) != 0) err = errno;
        free(name);
        if (err) break;
    }
    while (depth > 0) free(names[--depth]);
    free(names);
    close(cur);
    return err;
}

static void handle_wipe(void) {
    int err = wipe_tree("/box");
    char out[8] = {'w', (char)(err == 0), 0, 0};
    int32_t e = err;
    memcpy(out + 4, &e, 4);
    send_bytes(out, sizeof out);
}

/* ---- shared mode: clean-up and tamper checks after each run ------------------------------------------------- */

static const char *const shared_dirs[] = {"/tmp", "/dev/shm", "/dev/mqueue"}; /* emptied after every run */
#define N_SHARED_DIRS (sizeof shared_dirs / sizeof *shared_dirs)

struct self_state {
    int nice, policy, ioprio;
    cpu_set_t cpus;
    struct rlimit limits[RLIM_NLIMITS];
    struct stat dirs[N_SHARED_DIRS]; /* st_mode/st_uid/st_gid compared; st_ino 0 = absent */
};
static struct self_state baseline;

static void read_self(struct self_state *state) {
    memset(state, 0, sizeof *state);
    errno = 0;
    state->nice = getpriority(PRIO_PROCESS, 0);
    if (errno) fail("getpriority");
    state->policy = sched_getscheduler(0);
    state->ioprio = (int)syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
    if (state->policy < 0 || state->ioprio < 0) fail("sched_getscheduler/ioprio_get");
    if (sched_getaffinity(0, sizeof state->cpus, &state->cpus) != 0) fail("sched_getaffinity");
    for (int r = 0; r < RLIM_NLIMITS; r++)
        if (getrlimit(r, &state->limits[r]) != 0) fail("getrlimit");
    for (size_t i = 0; i < N_SHARED_DIRS; i++)
        if (lstat(shared_dirs[i], &state->dirs[i]) != 0) state->dirs[i].st_ino = 0;
}

static int self_changed(void) {
    struct self_state now;
    read_self(&now);
    if (now.nice != baseline.nice || now.policy != baseline.policy || now.ioprio != baseline.ioprio ||
        !CPU_EQUAL(&now.cpus, &baseline.cpus) || memcmp(now.limits, baseline.limits, sizeof now.limits) != 0)
        return T_SELF;
    for (size_t i = 0; i < N_SHARED_DIRS; i++) {
        struct stat *a = &now.dirs[i], *b = &baseline.dirs[i];
        if ((a->st_ino == 0) != (b->st_ino == 0)) return T_DIRS;
        if (b->st_ino == 0) continue;
        if (a->st_mode != b->st_mode || a->st_uid != b->st_uid || a->st_gid != b->st_gid) return T_DIRS;
        if (llistxattr(shared_dirs[i], NULL, 0) != 0) return T_DIRS; /* user.* xattrs on tmpfs (kernel ≥ 6.6) */
    }
    return 0;
}

/* SIGKILL every process of the slot's pid namespace we may signal (all of them are the run's: kill(-1) skips
 * the namespace's init and ourselves) and reap until none is left. Orphans come to us: we are a subreaper.
 * 0 when none is left; -1 if some still exist after 2 s (20 000 rounds of at most 100 µs). */
static int kill_everything(void) {
    for (int round = 0; round < 20000; round++) {
        int none = kill(-1, SIGKILL) != 0 && errno == ESRCH; /* zombies still count: they are not reaped yet */
        int reaped = 0;
        while (waitpid(-1, NULL, WNOHANG | __WALL) > 0) reaped = 1;
        if (none) return 0;
        if (!reaped) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    return -1;
}

/* Remove every SysV object of the slot's IPC namespace (all are the runs': the helper makes none). */
static int wipe_sysv(void) {
    int bad = 0;
    struct shm_info shm;
    int top = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&shm);
    for (int i = 0; i <= top; i++) {
        struct shmid_ds ds;
        int id = shmctl(i, SHM_STAT, &ds);
        if (id >= 0 && shmctl(id, IPC_RMID, NULL) != 0) bad = 1;
    }
    struct msginfo msg;
    top = msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&msg);
    for (int i = 0; i <= top; i++) {
        struct msqid_ds ds;
        int id = msgctl(i, MSG_STAT, &ds);
        if (id >= 0 && msgctl(id, IPC_RMID, NULL) != 0) bad = 1;
    }
    struct seminfo sem;
    top = semctl(0, 0, SEM_INFO, &sem);
    for (int i = 0; i <= top; i++) {
        struct semid_ds ds;
        int id = semctl(i, 0, SEM_STAT, &ds);
        if (id >= 0 && semctl(id, 0, IPC_RMID) != 0) bad = 1;
    }
    /* and check: *_INFO report the objects in use (shm: used_ids, msg: msgpool = queues, sem: semusz = sets) */
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&shm) < 0 || shm.used_ids != 0) bad = 1;
    if (msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&msg) < 0 || msg.msgpool != 0) bad = 1;
    if (semctl(0, 0, SEM_INFO, &sem) < 0 || sem.semusz != 0) bad = 1;
    return bad ? T_SYSV : 0;
}

static int clean_up_shared(int survivors) {
    int taint = survivors | self_changed(); /* before the wipes: a chmod 000 /tmp is a tamper, not a wipe failure */
    for (size_t i = 0; i < N_SHARED_DIRS; i++)
        if (baseline.dirs[i].st_ino != 0 && wipe_tree(shared_dirs[i]) != 0) taint |= T_WIPE;
    return taint | wipe_sysv();
}

static void load_filter(int fd) {
    static char program[65536];
    size_t size = 0;
    for (;;) {
        ssize_t got = read(fd, program + size, sizeof program - size);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail("read seccomp");
        if (got == 0) break;
        size += (size_t)got;
        if (size == sizeof program) { errno = EFBIG; fail("read seccomp"); }
    }
    close(fd);
    if (size == 0 || size % sizeof(struct sock_filter) != 0) { errno = EINVAL; fail("seccomp program"); }
    filter.len = (unsigned short)(size / sizeof(struct sock_filter));
    filter.filter = (struct sock_filter *)program;
}

static int number(const char *text) {
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0' || value > 1 << 20) { errno = EINVAL; fail(text); }
    return (int)value;
}

#ifndef CB_NO_MAIN
int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "shared") == 0)) {
        fprintf(stderr, "usage: cellblock-slot SOCK_FD BPF_FD TMP_SIZE_BYTES [shared]\n");
        return 2;
    }
    sock = number(argv[1]);
    shared_mode = argc == 5;
    /* bwrap exec'd us as /proc/self/fd/N: show as "bwrap" in /proc/<pid>/cmdline instead, as the init of a
     * fresh sandbox does (each run's init is a fork of this process and would show the fd path to the run). */
    char *args_end = argv[argc - 1] + strlen(argv[argc - 1]);
    if (shared_mode) {
        /* kill(-1) as root, or outside a sandbox's pid namespace, would hit innocent processes: refuse unless we
         * are a non-root child of a namespace's init (bwrap's) and already under seccomp (bwrap loaded it). */
        if (getuid() == 0 || geteuid() == 0 || getppid() != 1 || strcmp(argv[2], "-") != 0 ||
            prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2) {
            errno = EPERM;
            fail("shared mode runs only as a sandbox's non-root pid 2 under seccomp");
        }
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) fail("PR_SET_CHILD_SUBREAPER");
        read_self(&baseline);
    } else {
        load_filter(number(argv[2]));
    }
    char *end = NULL;
    tmp_size = strtoull(argv[3], &end, 10);
    if (argv[3][0] < '0' || argv[3][0] > '9' || *end != '\0' || tmp_size == 0) { errno = EINVAL; fail("tmp size"); }
    memset(argv[0], 0, (size_t)(args_end - argv[0]));
    memcpy(argv[0], "bwrap", args_end - argv[0] >= 5 ? 5 : 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) fail("PR_SET_PDEATHSIG");
    /* Nothing in the slot may read our memory or fds through /proc. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("PR_SET_DUMPABLE");
    send_bytes("H", 1);
    for (;;) {
        char control[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {message, CB_MAX_MESSAGE + 1};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t size = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (size < 0 && errno == EINTR) continue;
        if (size < 0) fail("recvmsg");
        if (size == 0) return 0; /* the host closed its end */
        int fds[4] = {-1, -1, -1, -1}, nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n && nfds < 4; i++) memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) { errno = EMSGSIZE; fail("message"); }
        if (message[0] == 'R') {
            struct request req;
            if (nfds != (shared_mode ? 4 : 3) || parse_request(message, (size_t)size, &req) != 0) {
                errno = EINVAL;
                fail("bad R");
            }
            memcpy(req.fds, fds, sizeof req.fds);
            handle_run(&req);
            free(req.argv);
            free(req.envp);
            continue;
        }
        if (nfds != 0 || size != 1) { errno = EINVAL; fail("bad message"); }
        if (message[0] == 'W') handle_wipe();
        else if (message[0] == 'Q') return 0;
        else { errno = EINVAL; fail("unexpected message"); }
    }
}
#endif
