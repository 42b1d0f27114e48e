/*
 * crashvfs: a SQLite VFS shim that simulates power loss (used by tools/powerloss.py).
 *
 * It wraps the default VFS ("unix") and becomes the default itself, so every connection the
 * process opens afterwards goes through it. Writes go through to the real file at once; for each
 * database, -wal and -journal file the shim remembers what is not durable yet: the content, as of
 * the file's last xSync, of every 512-byte sector changed since then, and the size it had then.
 * xSync on a file makes that file's changes durable (any handle: the state is kept per path). The
 * shim does not pass xSync on to the OS: durability is what this model says, and a real fsync
 * (milliseconds on a busy disk) would only slow every crash point down without changing it.
 *
 * Write, sync and truncate calls on those files are counted. At the N-th one (chosen by
 * crashvfs_arm) the shim simulates a power loss before doing it: every file goes back to its
 * durable state ("drop"), or, in "torn" mode, each changed sector independently keeps its new
 * content or goes back (a seeded coin each), and a file whose size changed keeps the new or the
 * old size (sectors past the old size that go back become zeros). Then the process ends at once
 * with _exit(): no SQLite or Python cleanup runs. The disk model is the one SQLite's own crash
 * tests use (test6.c): a sector is written whole or not at all, and nothing outside a write's
 * range changes (so the shim reports POWERSAFE_OVERWRITE and a 512-byte sector, and none of the
 * ATOMIC, SAFE_APPEND or SEQUENTIAL guarantees a real disk may not give).
 *
 * File names (creation, deletion, directory syncs):
 * - A file that did not exist when this process first opened it is new: its name becomes durable
 *   only when its directory is synced. SQLite's unix VFS does that itself, inside xSync, on the
 *   first sync of each -wal or -journal handle it opened with SQLITE_OPEN_CREATE, and inside
 *   xDelete when asked to; the shim mirrors exactly those two cases (they sync every name in the
 *   directory, the database file's too). A new file whose name is not durable at the crash is
 *   removed ("drop"), or removed or kept with torn content (a coin, "torn"). POSIX promises no
 *   more than this (fsync of a file does not make its name durable); journaling file systems often
 *   give more, so this errs on the strict side.
 * - Deletion is durable at once, as in test6.c. In WAL mode SQLite deletes only the -wal at the
 *   last close, after a checkpoint that synced every frame into the database: an undone unlink
 *   would bring back frames the database already holds. The writers under test never close.
 * - Files that existed when the process opened them are durable as they are (the harness runs
 *   each crash in a fresh process, as after a reboot).
 * - The -shm file is not modelled: it is memory-mapped, never synced, not durable by design, and
 *   the first connection after a crash (it takes the DMS lock alone) truncates it and rebuilds the
 *   WAL index from the -wal file. The shim passes the xShm* calls through. It offers I/O methods
 *   version 2 (no xFetch), so SQLite reads through xRead and every byte written passes xWrite.
 * - Temporary files (no name, or temp/sub-journals) pass through, uncounted: they hold nothing
 *   that must survive.
 *
 * API (for ctypes): crashvfs_register(), crashvfs_arm(), crashvfs_ops().
 */
#include <sqlite3.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512

/* The unsynced state of one file path, shared by every handle open on it. */
typedef struct Track Track;
struct Track {
    Track *next;
    char *path;
    const char *kind;       /* "db", "wal" or "journal" */
    int is_new;             /* created by this process; its name is not durable yet */
    int changed;            /* written or truncated since the last sync */
    sqlite3_int64 durable;  /* the file's size at the last sync */
    size_t slots;           /* sectors below `durable` that dirty/saved cover */
    unsigned char *dirty;   /* per sector: changed since the last sync */
    unsigned char *saved;   /* their content at the last sync (slots * SECTOR bytes) */
};

typedef struct CrashFile {
    sqlite3_file base;
    sqlite3_file *real; /* the wrapped VFS's file, allocated right after this struct */
    Track *track;       /* NULL for files that are not tracked */
    int dirsync;        /* unix's xSync would sync the directory too (first sync only) */
} CrashFile;

static sqlite3_vfs *real_vfs;
static Track *tracks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static sqlite3_int64 op_count;
static sqlite3_int64 crash_at; /* 0: never */
static sqlite3_uint64 rng_state;
static int torn_mode;
static int report_fd = -1;
static int exit_code = 1;

static sqlite3_uint64 next_random(void) { /* splitmix64 */
    sqlite3_uint64 z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int coin(void) { return (int)(next_random() >> 63); }

static size_t sector_of(sqlite3_int64 offset) { return (size_t)(offset / SECTOR); }

static size_t dir_length(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

/* A directory sync: the names of every new file in `path`'s directory become durable. */
static void sync_directory_of(const char *path) {
    size_t n = dir_length(path);
    for (Track *t = tracks; t; t = t->next) {
        if (dir_length(t->path) == n && strncmp(t->path, path, n) == 0) t->is_new = 0;
    }
}

static Track *find_track(const char *path) {
    for (Track *t = tracks; t; t = t->next) {
        if (strcmp(t->path, path) == 0) return t;
    }
    return NULL;
}

static void forget_track(const char *path) {
    for (Track **at = &tracks; *at; at = &(*at)->next) {
        if (strcmp((*at)->path, path) == 0) {
            *at = (*at)->next; /* handles still open on it keep their pointer: never freed */
            return;
        }
    }
}

/* Everything durable as it is now: no sector saved, `size` bytes long. */
static int reset_track(Track *t, sqlite3_int64 size) {
    size_t slots = (size_t)((size + SECTOR - 1) / SECTOR);
    if (slots > t->slots) {
        unsigned char *dirty = realloc(t->dirty, slots);
        if (!dirty) return SQLITE_NOMEM;
        t->dirty = dirty;
        unsigned char *saved = realloc(t->saved, slots * SECTOR);
        if (!saved) return SQLITE_NOMEM;
        t->saved = saved;
    }
    t->slots = slots;
    if (slots) memset(t->dirty, 0, slots);
    t->durable = size;
    t->changed = 0;
    return SQLITE_OK;
}

/* Keep the durable content of the sectors [first, end) that are not saved yet. */
static int save_sectors(CrashFile *f, size_t first, size_t end) {
    Track *t = f->track;
    if (end > t->slots) end = t->slots;
    for (size_t s = first; s < end; s++) {
        if (t->dirty[s]) continue;
        sqlite3_int64 offset = (sqlite3_int64)s * SECTOR;
        sqlite3_int64 length = t->durable - offset < SECTOR ? t->durable - offset : SECTOR;
        int rc = f->real->pMethods->xRead(f->real, t->saved + offset, (int)length, offset);
        if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) return rc;
        t->dirty[s] = 1;
    }
    t->changed = 1;
    return SQLITE_OK;
}

static void report_crash(const char *op, const Track *t) {
    if (report_fd < 0) return;
    char line[96];
    int n = snprintf(line, sizeof line, "C %lld %s %s %s\n", (long long)op_count, op, t->kind,
                     torn_mode ? "torn" : "drop");
    if (n > 0) (void)!write(report_fd, line, (size_t)n);
}

/* Put one file in the state the disk would show after the power loss. */
static void restore(Track *t) {
    struct stat st;
    if (stat(t->path, &st) != 0) return;
    if (t->is_new && (!torn_mode || coin())) {
        unlink(t->path);
        return;
    }
    sqlite3_int64 now = st.st_size, durable = t->is_new ? 0 : t->durable;
    if (!t->changed && now == durable && !t->is_new) return;
    sqlite3_int64 size = durable;
    if (torn_mode && now != durable && coin()) size = now;
    int fd = open(t->path, O_RDWR);
    if (fd < 0) return;
    if (size != now && ftruncate(fd, size) != 0) {
        close(fd);
        return;
    }
    unsigned char sector[SECTOR];
    for (sqlite3_int64 offset = 0; offset < size; offset += SECTOR) {
        size_t s = (size_t)(offset / SECTOR);
        int dirty = !t->is_new && offset < durable && s < t->slots && t->dirty[s];
        int grown = offset + SECTOR > durable;  /* overlaps what came after the durable end */
        if (!dirty && !grown) continue;
        if (torn_mode && coin()) continue; /* this sector reached the disk */
        sqlite3_int64 end = offset + SECTOR < size ? offset + SECTOR : size;
        sqlite3_int64 old_end = durable < end ? durable : end;
        if (old_end > offset) {
            if (!dirty) { /* unchanged below the durable end: read it back as it is */
                if (pread(fd, sector, (size_t)(old_end - offset), offset) < 0) break;
            } else {
                memcpy(sector, t->saved + offset, (size_t)(old_end - offset));
            }
        }
        sqlite3_int64 keep = old_end > offset ? old_end - offset : 0;
        memset(sector + keep, 0, (size_t)(end - offset - keep));
        if (pwrite(fd, sector, (size_t)(end - offset), offset) < 0) break;
    }
    close(fd);
}

static void power_loss(const char *op, const Track *at) {
    report_crash(op, at);
    for (Track *t = tracks; t; t = t->next) restore(t);
    _exit(exit_code);
}

/* Start a write/sync/truncate on a tracked file: take the lock, count it, and lose power instead
 * if it is the armed one. Untracked files are neither locked nor counted. */
static void begin_op(CrashFile *f, const char *op) {
    if (!f->track) return;
    pthread_mutex_lock(&lock);
    op_count++;
    if (crash_at > 0 && op_count == crash_at) power_loss(op, f->track);
}

static int end_op(CrashFile *f, int rc) {
    if (f->track) pthread_mutex_unlock(&lock);
    return rc;
}

/* ---------------------------------------------------------------- I/O methods */

/* The wrapped file of a shim file, and a call of one of its methods. */
#define REAL(file) (((CrashFile *)(file))->real)
#define FORWARD(file, method, ...) REAL(file)->pMethods->method(REAL(file), __VA_ARGS__)

static int cx_close(sqlite3_file *file) {
    return REAL(file)->pMethods->xClose(REAL(file)); /* the track stays: unsynced changes too */
}

static int cx_read(sqlite3_file *file, void *buf, int amount, sqlite3_int64 offset) {
    return FORWARD(file, xRead, buf, amount, offset);
}

static int cx_write(sqlite3_file *file, const void *buf, int amount, sqlite3_int64 offset) {
    CrashFile *f = (CrashFile *)file;
    begin_op(f, "write");
    int rc = SQLITE_OK;
    if (f->track) rc = save_sectors(f, sector_of(offset), sector_of(offset + amount + SECTOR - 1));
    if (rc == SQLITE_OK) rc = FORWARD(file, xWrite, buf, amount, offset);
    return end_op(f, rc);
}

static int cx_truncate(sqlite3_file *file, sqlite3_int64 size) {
    CrashFile *f = (CrashFile *)file;
    begin_op(f, "truncate");
    int rc = f->track ? save_sectors(f, sector_of(size), f->track->slots) : SQLITE_OK;
    if (rc == SQLITE_OK) rc = FORWARD(file, xTruncate, size);
    return end_op(f, rc);
}

static int cx_sync(sqlite3_file *file, int flags) {
    CrashFile *f = (CrashFile *)file;
    if (!f->track) return FORWARD(file, xSync, flags);
    /* not passed on: the model decides what is durable (see the header) */
    begin_op(f, "sync");
    sqlite3_int64 size = 0;
    int rc = FORWARD(file, xFileSize, &size);
    if (rc == SQLITE_OK) rc = reset_track(f->track, size);
    if (rc == SQLITE_OK && f->dirsync) {
        sync_directory_of(f->track->path);
        f->dirsync = 0;
    }
    return end_op(f, rc);
}

static int cx_file_size(sqlite3_file *file, sqlite3_int64 *size) {
    return FORWARD(file, xFileSize, size);
}

static int cx_lock(sqlite3_file *file, int level) { return FORWARD(file, xLock, level); }

static int cx_unlock(sqlite3_file *file, int level) { return FORWARD(file, xUnlock, level); }

static int cx_check_reserved_lock(sqlite3_file *file, int *out) {
    return FORWARD(file, xCheckReservedLock, out);
}

static int cx_file_control(sqlite3_file *file, int op, void *arg) {
    return FORWARD(file, xFileControl, op, arg);
}

static int cx_sector_size(sqlite3_file *file) {
    (void)file;
    return SECTOR;
}

static int cx_device_characteristics(sqlite3_file *file) {
    int flags = REAL(file)->pMethods->xDeviceCharacteristics(REAL(file));
    flags &= ~(SQLITE_IOCAP_ATOMIC | SQLITE_IOCAP_ATOMIC512 | SQLITE_IOCAP_ATOMIC1K |
               SQLITE_IOCAP_ATOMIC2K | SQLITE_IOCAP_ATOMIC4K | SQLITE_IOCAP_ATOMIC8K |
               SQLITE_IOCAP_ATOMIC16K | SQLITE_IOCAP_ATOMIC32K | SQLITE_IOCAP_ATOMIC64K |
               SQLITE_IOCAP_SAFE_APPEND | SQLITE_IOCAP_SEQUENTIAL | SQLITE_IOCAP_BATCH_ATOMIC);
    return flags | SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static int cx_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out) {
    return FORWARD(file, xShmMap, page, size, extend, out);
}

static int cx_shm_lock(sqlite3_file *file, int offset, int n, int flags) {
    return FORWARD(file, xShmLock, offset, n, flags);
}

static void cx_shm_barrier(sqlite3_file *file) { REAL(file)->pMethods->xShmBarrier(REAL(file)); }

static int cx_shm_unmap(sqlite3_file *file, int delete_flag) {
    return FORWARD(file, xShmUnmap, delete_flag);
}

static const sqlite3_io_methods crash_io = {
    2, /* no xFetch/xUnfetch: every read and write goes through xRead/xWrite */
    cx_close, cx_read, cx_write, cx_truncate, cx_sync, cx_file_size, cx_lock, cx_unlock,
    cx_check_reserved_lock, cx_file_control, cx_sector_size, cx_device_characteristics,
    cx_shm_map, cx_shm_lock, cx_shm_barrier, cx_shm_unmap,
    NULL, NULL,
};

/* ---------------------------------------------------------------- VFS methods */

static const char *tracked_kind(const char *name, int flags) {
    if (!name) return NULL;
    if (flags & SQLITE_OPEN_MAIN_DB) return "db";
    if (flags & SQLITE_OPEN_WAL) return "wal";
    if (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL)) return "journal";
    return NULL;
}

static int cv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out) {
    (void)vfs;
    CrashFile *f = (CrashFile *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)&f[1];
    const char *kind = tracked_kind(name, flags);
    pthread_mutex_lock(&lock);
    int existed = kind ? access(name, F_OK) == 0 : 1;
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&lock);
        f->base.pMethods = NULL;
        return rc;
    }
    f->base.pMethods = &crash_io;
    if (kind) {
        Track *t = find_track(name);
        if (!t) {
            sqlite3_int64 size = 0;
            t = calloc(1, sizeof *t);
            char *path = t ? strdup(name) : NULL;
            rc = path ? f->real->pMethods->xFileSize(f->real, &size) : SQLITE_NOMEM;
            if (rc == SQLITE_OK) {
                t->path = path;
                t->kind = kind;
                t->is_new = !existed;
                rc = reset_track(t, size);
            }
            if (rc != SQLITE_OK) {
                free(path);
                if (t) free(t->dirty), free(t->saved);
                free(t);
                pthread_mutex_unlock(&lock);
                f->real->pMethods->xClose(f->real);
                f->base.pMethods = NULL;
                return rc;
            }
            t->next = tracks;
            tracks = t;
        }
        f->track = t;
        /* unixOpen sets UNIXFILE_DIRSYNC for exactly these: its first xSync syncs the folder */
        f->dirsync = (flags & SQLITE_OPEN_CREATE) && strcmp(kind, "db") != 0;
    }
    pthread_mutex_unlock(&lock);
    return SQLITE_OK;
}

static int cv_delete(sqlite3_vfs *vfs, const char *name, int dirsync) {
    (void)vfs;
    pthread_mutex_lock(&lock);
    int rc = real_vfs->xDelete(real_vfs, name, dirsync);
    if (rc == SQLITE_OK) {
        forget_track(name);
        if (dirsync) sync_directory_of(name);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

static int cv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int cv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *cv_dl_open(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void cv_dl_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    real_vfs->xDlError(real_vfs, n, out);
}

static void (*cv_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, handle, symbol);
}

static void cv_dl_close(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    real_vfs->xDlClose(real_vfs, handle);
}

static int cv_randomness(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int cv_sleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return real_vfs->xSleep(real_vfs, microseconds);
}

static int cv_current_time(sqlite3_vfs *vfs, double *out) {
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int cv_get_last_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int cv_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static sqlite3_vfs crash_vfs = {
    /* iVersion 2 (no xSetSystemCall & co); szOsFile, mxPathname: set by crashvfs_register() */
    2, 0, 0, NULL, "crashvfs", NULL, cv_open, cv_delete, cv_access, cv_full_pathname, cv_dl_open,
    cv_dl_error, cv_dl_sym, cv_dl_close, cv_randomness, cv_sleep, cv_current_time,
    cv_get_last_error, cv_current_time_int64, NULL, NULL, NULL,
};

/* ---------------------------------------------------------------- API */

/* Wrap the default VFS and make the shim the default; idempotent. */
int crashvfs_register(void) {
    if (real_vfs) return SQLITE_OK;
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    sqlite3_vfs *dflt = sqlite3_vfs_find(NULL);
    if (!dflt || dflt->iVersion < 2) return SQLITE_ERROR;
    real_vfs = dflt;
    crash_vfs.szOsFile = (int)sizeof(CrashFile) + dflt->szOsFile;
    crash_vfs.mxPathname = dflt->mxPathname;
    return sqlite3_vfs_register(&crash_vfs, 1);
}

/* Simulate a power loss at the `at`-th counted operation from now on (0: never). `seed` drives
 * the torn mode's coins; the crash writes one line "C <op number> <write|sync|truncate>
 * <db|wal|journal> <drop|torn>" to `fd` (if >= 0), then ends the process with `code`. */
void crashvfs_arm(sqlite3_int64 at, sqlite3_uint64 seed, int torn, int fd, int code) {
    pthread_mutex_lock(&lock);
    crash_at = at > 0 ? op_count + at : 0;
    rng_state = seed;
    torn_mode = torn;
    report_fd = fd;
    exit_code = code;
    pthread_mutex_unlock(&lock);
}

/* Write, sync and truncate calls counted so far. */
sqlite3_int64 crashvfs_ops(void) { return op_count; }
