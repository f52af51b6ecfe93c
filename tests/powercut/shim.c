/* A power cut, simulated: preloaded into `loader serve` and its children, this wraps fsync and
 * fdatasync. Each sync under POWERCUT_ROOT copies what it made durable into POWERCUT_SHADOW: a file's
 * bytes, or a folder's entries (name -> file identity). What was never synced never reaches the shadow,
 * so the shadow is what a disk holds after the power goes. POWERCUT_AT names a path fragment (a
 * trailing '$' ties it to the path's end) and
 * POWERCUT_AFTER a count: the sync that would be that many-th of such paths kills the whole process group
 * instead, before it reaches the disk. tests/powercut/__init__.py builds the disk back from the shadow. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *root, *shadow, *cut_at;
static size_t root_len;
static unsigned long copies;

__attribute__((constructor)) static void init(void) {
    root = getenv("POWERCUT_ROOT");
    shadow = getenv("POWERCUT_SHADOW");
    cut_at = getenv("POWERCUT_AT");
    root_len = root ? strlen(root) : 0;
}

/* A file's identity: its inode and birth time, so that a reused inode number is another file. */
static int identity(int dirfd, const char *name, int flags, char *key, size_t size, int *is_dir) {
    struct statx st;
    if (statx(dirfd, name, flags, STATX_INO | STATX_BTIME | STATX_TYPE, &st) != 0) return -1;
    snprintf(key, size, "%llx-%llx-%x", (unsigned long long)st.stx_ino,
             (unsigned long long)st.stx_btime.tv_sec, st.stx_btime.tv_nsec);
    *is_dir = S_ISDIR(st.stx_mode);
    return 0;
}

static int lock_file(const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", shadow, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) flock(fd, LOCK_EX);
    return fd;
}

/* A line in a file of the shadow's own: where the cut came, the root folder's identity. */
static void note(const char *name, const char *line) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", shadow, name);
    FILE *out = fopen(path, "w");
    if (out) {
        fprintf(out, "%s\n", line);
        fclose(out);
    }
}

static int cut_has_come(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/CUT", shadow);
    return access(path, F_OK) == 0;
}

/* Counts syncs of paths holding POWERCUT_AT across every process; at the chosen one, cuts the power. */
static int matches(const char *path) {
    size_t len = strlen(cut_at), path_len = strlen(path);
    if (len == 0 || cut_at[len - 1] != '$') return strstr(path, cut_at) != NULL;
    return path_len >= len - 1 && strncmp(path + path_len - (len - 1), cut_at, len - 1) == 0;
}

/* POWERCUT_AFTER is read at each sync, so a process may move it as it goes (os.environ). */
static void maybe_cut(const char *path) {
    const char *after = getenv("POWERCUT_AFTER");
    long cut_after = after ? atol(after) : 0;
    if (!cut_at || !cut_after || !matches(path)) return;
    int fd = lock_file("count");
    if (fd < 0) return;
    char buf[32] = {0};
    long n = (pread(fd, buf, sizeof buf - 1, 0) > 0 ? atol(buf) : 0) + 1;
    int len = snprintf(buf, sizeof buf, "%ld\n", n);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, buf, (size_t)len, 0) == len && n == cut_after) {
        note("CUT", path);
        kill(0, SIGKILL);
        for (;;) pause();
    }
    close(fd);
}

static int tmp_name(char *out, size_t size) {
    return snprintf(out, size, "%s/tmp.%d.%lu", shadow, getpid(), __atomic_fetch_add(&copies, 1, 0));
}

static void copy_bytes(int fd, const char *key) {
    char tmp[PATH_MAX], dest[PATH_MAX], self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int in = open(self, O_RDONLY | O_CLOEXEC);
    if (in < 0) return;
    tmp_name(tmp, sizeof tmp);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out >= 0) {
        ssize_t got;
        while ((got = copy_file_range(in, NULL, out, NULL, 1 << 20, 0)) > 0) {
        }
        close(out);
        snprintf(dest, sizeof dest, "%s/data/%s", shadow, key);
        if (got == 0 && !cut_has_come()) rename(tmp, dest);
        else unlink(tmp);
    }
    close(in);
}

static void copy_entries(int fd, const char *key) {
    char tmp[PATH_MAX], dest[PATH_MAX], entry_key[64];
    int dirfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return;
    DIR *dir = fdopendir(dirfd);
    if (!dir) {
        close(dirfd);
        return;
    }
    tmp_name(tmp, sizeof tmp);
    FILE *out = fopen(tmp, "w");
    if (out) {
        struct dirent *entry;
        int is_dir;
        while ((entry = readdir(dir))) {
            if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
            if (identity(dirfd, entry->d_name, AT_SYMLINK_NOFOLLOW, entry_key, sizeof entry_key, &is_dir))
                continue;  /* removed meanwhile */
            fprintf(out, "%c\t%s\t%s\n", is_dir ? 'd' : 'f', entry_key, entry->d_name);
        }
        fclose(out);
        snprintf(dest, sizeof dest, "%s/dirs/%s", shadow, key);
        if (!cut_has_come()) rename(tmp, dest);
        else unlink(tmp);
    }
    closedir(dir);
}

static void record(int fd) {
    char self[64], path[PATH_MAX], key[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(self, path, sizeof path - 1);
    if (len <= 0) return;
    path[len] = 0;
    if (strncmp(path, root, root_len) != 0 || (path[root_len] != '/' && path[root_len] != 0)) return;
    maybe_cut(path);
    int is_dir;
    if (identity(fd, "", AT_EMPTY_PATH, key, sizeof key, &is_dir)) return;
    /* One copy of a file at a time, so a later copy (of newer bytes) is never overtaken by an older. */
    char lock[96];
    snprintf(lock, sizeof lock, "locks/%s", key);
    int held = lock_file(lock);
    if (is_dir) copy_entries(fd, key);
    else copy_bytes(fd, key);
    if (path[root_len] == 0) note("root", key);
    if (held >= 0) close(held);
}

/* Record what the sync makes durable, then make the real call (looked up once, by name). */
static int synced(int fd, int (**real)(int), const char *name) {
    if (!*real) *real = (int (*)(int))dlsym(RTLD_NEXT, name);
    int saved = errno;
    if (root && shadow) record(fd);
    errno = saved;
    return (*real)(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    return synced(fd, &real, "fsync");
}

int fdatasync(int fd) {
    static int (*real)(int);
    return synced(fd, &real, "fdatasync");
}
