/* The denial log's monitor as a small compiled program (issue #16, since 12-08).
 *
 * What sandbox/denial_monitor.py does, with the same protocol on CHANNEL, the same
 * confinement steps in the same order and the same log lines byte for byte; the Python
 * program still runs where the monitor must be a fork of the component, not exec'd
 * (denial_log.launch's fork_only; an exec that fails). The interpreter it replaces held about
 * 4 MiB of its own; this program's private memory is about 0.1 MiB.
 *
 * Started by denial_log.py (a double fork: no_new_privs, no capability, no descriptor but
 * CHANNEL and maybe LOG), exec'd from a sealed memfd of mode 0111, so that the kernel starts
 * it not dumpable: no process of its uid can attach to it before step 1 below.
 *
 *   denial-monitor CHANNEL LOG   configuration waiting in CHANNEL (written before the fork)
 *   denial-monitor CHANNEL       prelaunched: the configuration comes later, with the log's
 *                                descriptor on its first bytes (SCM_RIGHTS)
 * argv[0] is the title ps shows.
 *
 * The configuration (denial_monitor.encode_config): a 4-byte little-endian length, then
 *   "CCDM", u32 version, u32 target, u8 verbose, u8 mdwe, u8 landlock, u8 has_default,
 *   i32 default errno, u32 max_kinds, u32 lines_per_minute, str label, u32 + bytes bpf,
 *   u32 groups: (i32 nr, u32 rules: (i32 errno, u32 conds: (u8 index, u8 op, u64 value, u64 mask)))
 *   u32 names: (i32 nr, str), u32 families: (u32 number, str), u32 errnos: (i32 code, str)
 * where str is a u16 length and that many bytes. Anything malformed: "E" naming the step.
 *
 * Before it takes anything but the configuration it confines itself, each step checked:
 *   0. its own resource limits (core 0, nofile 16, as 1 GiB), lowered only;
 *   1. not dumpable, its name "denial-monitor";
 *   2. no_new_privs, and no capability in any set (capget shows none);
 *   3. Landlock: every right handled and none granted, signal and abstract unix scoped;
 *   4. the seccomp filter the component sends (denial_log.monitor_filter).
 * It then says b"R" (with what the kernel lacked), or b"E" + "step: reason", takes the
 * listener (SCM_RIGHTS) and answers each notification with the policy's errno, then logs it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NAME "denial-monitor"
#define FIRST 10
#define EVERY 1000
#define VERBOSE_PER_SECOND 100
#define MAX_CONFIG (1 << 20)        /* bytes: every syscall's name is about 10 KiB */
#define MAX_STR 63                  /* a syscall's, family's or errno's name */
#define MAX_LABEL 255
#define MAX_NR 1024                 /* syscall numbers with a name */
#define MAX_RULES 4096
#define MAX_FAMILIES 256
#define MAX_ERRNOS 256
#define MAX_KINDS_CAP (1 << 20)     /* a test's "unbounded" monitor (test_probe.py); denial_log sends 256 */
#define SHORT_LEN 224               /* a kind's short description: name(family=..., type=..) */
#define LINE_LEN 1024

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#define MDWE_REFUSE_EXEC_GAIN 1
#define SYS_LANDLOCK_CREATE_RULESET 444
#define SYS_LANDLOCK_RESTRICT_SELF 446

/* ------------------------------------------------------------------ configuration */

struct cond { uint8_t index, op; uint64_t value, mask; };
struct rule { int32_t nr, code; uint32_t index, ncond, first_cond; };
struct named { int64_t key; char name[MAX_STR + 1]; };

static struct {
    uint32_t target, max_kinds, lines_per_minute;
    int verbose, mdwe, landlock, has_default;
    int32_t default_errno;
    char label[MAX_LABEL + 1];
    unsigned char *bpf;
    uint32_t bpf_len;
    struct rule *rules;
    uint32_t nrules;
    struct cond *conds;
    uint32_t nconds;
    char (*names)[MAX_STR + 1];         /* the names sent, in order */
    uint16_t name_at[MAX_NR];           /* by syscall number: 1 + its index in names, 0 none */
    struct named families[MAX_FAMILIES];
    uint32_t nfamilies;
    struct named errnos[MAX_ERRNOS];
    uint32_t nerrnos;
} cfg;

/* Tables sized for the most a configuration may hold, of which it uses a few pages: mapped
 * untouched (calloc's heap memory was written, 160 KiB of each monitor's own). */
static void *zeroed(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

struct reader { const unsigned char *p, *end; const char *bad; };

static int take(struct reader *r, void *out, size_t n, const char *what) {
    if (r->bad)
        return 0;
    if ((size_t)(r->end - r->p) < n) {
        r->bad = what;
        return 0;
    }
    if (out)
        memcpy(out, r->p, n);
    r->p += n;
    return 1;
}

/* x86_64 is little-endian, as the format is. */
static uint32_t u32(struct reader *r, const char *what) { uint32_t v = 0; take(r, &v, 4, what); return v; }
static uint8_t u8(struct reader *r, const char *what) { uint8_t v = 0; take(r, &v, 1, what); return v; }

static void str(struct reader *r, char *out, size_t max, const char *what) {
    uint16_t n = 0;
    take(r, &n, 2, what);
    if (!r->bad && n > max)
        r->bad = what;
    if (take(r, out, r->bad ? 0 : n, what))
        out[n] = 0;
    else
        out[0] = 0;
}

static int ok_string(const char *s) {
    /* Names go into log lines: printable ASCII only, no newline to forge a line with. */
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

/* Returns NULL, or what is malformed. */
static const char *parse(const unsigned char *data, size_t len) {
    struct reader r = {data, data + len, NULL};
    char magic[4];
    uint32_t groups, n, i, j, k;
    take(&r, magic, 4, "magic");
    if (!r.bad && memcmp(magic, "CCDM", 4) != 0)
        return "not a monitor configuration";
    if (u32(&r, "version") != 1 && !r.bad)
        return "unknown version";
    cfg.target = u32(&r, "target");
    cfg.verbose = u8(&r, "verbose") != 0;
    cfg.mdwe = u8(&r, "mdwe") != 0;
    cfg.landlock = u8(&r, "landlock") != 0;
    cfg.has_default = u8(&r, "default") != 0;
    cfg.default_errno = (int32_t)u32(&r, "default");
    cfg.max_kinds = u32(&r, "max_kinds");
    cfg.lines_per_minute = u32(&r, "lines_per_minute");
    str(&r, cfg.label, MAX_LABEL, "label");
    cfg.bpf_len = u32(&r, "bpf");
    if (!r.bad && cfg.bpf_len > (uint32_t)(r.end - r.p))
        return "bpf";
    cfg.bpf = (unsigned char *)r.p;
    take(&r, NULL, cfg.bpf_len, "bpf");
    if (r.bad)
        return r.bad;
    if (cfg.max_kinds > MAX_KINDS_CAP)
        return "max_kinds";
    if (cfg.has_default && (cfg.default_errno <= 0 || cfg.default_errno > 4095))
        return "default";
    if (!ok_string(cfg.label))
        return "label";
    cfg.rules = zeroed(MAX_RULES * sizeof *cfg.rules);
    cfg.conds = zeroed(MAX_RULES * 6 * sizeof *cfg.conds);
    if (!cfg.rules || !cfg.conds)
        return "out of memory";
    groups = u32(&r, "rules");
    for (i = 0; i < groups && !r.bad; i++) {
        int32_t nr = (int32_t)u32(&r, "rules");
        n = u32(&r, "rules");
        if (r.bad)
            break;
        if (n > MAX_RULES - cfg.nrules)
            return "too many rules";
        for (j = 0; j < n && !r.bad; j++) {
            struct rule *rule = &cfg.rules[cfg.nrules];
            rule->nr = nr;
            rule->index = j;
            rule->code = (int32_t)u32(&r, "rules");
            rule->ncond = u32(&r, "rules");
            rule->first_cond = cfg.nconds;
            if (r.bad)
                break;
            if (rule->code <= 0 || rule->code > 4095)
                return "rule errno";
            if (rule->ncond > 6)
                return "too many conditions";
            for (k = 0; k < rule->ncond && !r.bad; k++) {
                struct cond *c = &cfg.conds[cfg.nconds++];
                c->index = u8(&r, "condition");
                c->op = u8(&r, "condition");
                take(&r, &c->value, 8, "condition");
                take(&r, &c->mask, 8, "condition");
                if (!r.bad && (c->index > 5 || c->op > 6))
                    return "condition";
            }
            cfg.nrules++;
        }
    }
    n = u32(&r, "names");
    if (!r.bad && n > MAX_NR)
        return "names";
    cfg.names = zeroed((n ? n : 1) * sizeof *cfg.names);
    if (!cfg.names)
        return "out of memory";
    for (i = 0; i < n && !r.bad; i++) {
        int32_t nr = (int32_t)u32(&r, "names");
        char name[MAX_STR + 1];
        str(&r, name, MAX_STR, "names");
        if (r.bad)
            break;
        if (nr < 0 || nr >= MAX_NR || !name[0] || !ok_string(name))
            return "names";
        memcpy(cfg.names[i], name, sizeof name);
        cfg.name_at[nr] = (uint16_t)(i + 1);
    }
    n = u32(&r, "families");
    if (!r.bad && n > MAX_FAMILIES)
        return "families";
    for (i = 0; i < n && !r.bad; i++) {
        cfg.families[i].key = u32(&r, "families");
        str(&r, cfg.families[i].name, MAX_STR, "families");
        if (!r.bad && !ok_string(cfg.families[i].name))
            return "families";
        cfg.nfamilies = i + 1;
    }
    n = u32(&r, "errnos");
    if (!r.bad && n > MAX_ERRNOS)
        return "errnos";
    for (i = 0; i < n && !r.bad; i++) {
        cfg.errnos[i].key = (int32_t)u32(&r, "errnos");
        str(&r, cfg.errnos[i].name, MAX_STR, "errnos");
        if (!r.bad && !ok_string(cfg.errnos[i].name))
            return "errnos";
        cfg.nerrnos = i + 1;
    }
    if (r.bad)
        return r.bad;
    if (r.p != r.end)
        return "trailing bytes";
    return NULL;
}

/* ------------------------------------------------------------------ answering */

static int holds(const struct cond *c, const uint64_t *args) {
    uint64_t arg = args[c->index];
    switch (c->op) {
    case 0: return arg == c->value;
    case 1: return arg != c->value;
    case 2: return arg < c->value;
    case 3: return arg <= c->value;
    case 4: return arg > c->value;
    case 5: return arg >= c->value;
    default: return (arg & c->mask) == c->value;
    }
}

static const char *syscall_name(int32_t nr) {
    return nr >= 0 && nr < MAX_NR && cfg.name_at[nr] ? cfg.names[cfg.name_at[nr] - 1] : NULL;
}

/* The errno the policy gives (as denial_monitor.decide), and the decision that gave it: the
 * rule's global index, or -1 with `known` (the syscall has a name) for the default. */
static int32_t decide(int32_t nr, const uint64_t *args, int32_t *rule_index) {
    uint32_t i, k;
    for (i = 0; i < cfg.nrules; i++) {
        const struct rule *rule = &cfg.rules[i];
        int all = 1;
        if (rule->nr != nr)
            continue;
        for (k = 0; k < rule->ncond && all; k++)
            all = holds(&cfg.conds[rule->first_cond + k], args);
        if (all) {
            *rule_index = (int32_t)i;
            return rule->code;
        }
    }
    *rule_index = -1;
    return cfg.has_default ? cfg.default_errno : EPERM;
}

/* ------------------------------------------------------------------ describing */

static const char *lookup(const struct named *table, uint32_t n, int64_t key) {
    uint32_t i;
    for (i = 0; i < n; i++)
        if (table[i].key == key)
            return table[i].name;
    return NULL;
}

static void describe(char *out, size_t size, int32_t nr, const uint64_t *a, int verbose) {
    const char *name = syscall_name(nr);
    char fallback[32];
    if (!name) {
        snprintf(fallback, sizeof fallback, "syscall %d", nr);
        name = fallback;
    }
    if (!strcmp(name, "socket") || !strcmp(name, "socketpair")) {
        const char *family = lookup(cfg.families, cfg.nfamilies, (int64_t)(a[0] & 0xFFFFFFFFu));
        if (family)
            snprintf(out, size, "%s(family=%s, type=%llu)", name, family, (unsigned long long)(a[1] & 0xF));
        else
            snprintf(out, size, "%s(family=%llu, type=%llu)", name, (unsigned long long)a[0],
                     (unsigned long long)(a[1] & 0xF));
    } else if (!strcmp(name, "ioctl"))
        snprintf(out, size, "ioctl(fd=%llu, request=0x%llx)", (unsigned long long)(a[0] & 0xFFFFFFFFu),
                 (unsigned long long)(a[1] & 0xFFFFFFFFu));
    else if (!strcmp(name, "clone") || !strcmp(name, "unshare"))
        snprintf(out, size, "%s(flags=0x%llx)", name, (unsigned long long)a[0]);
    else if (!strcmp(name, "prctl"))
        snprintf(out, size, "prctl(option=%llu, arg2=0x%llx)", (unsigned long long)a[0], (unsigned long long)a[1]);
    else if (verbose)
        snprintf(out, size, "%s(0x%llx, 0x%llx, 0x%llx, 0x%llx)", name, (unsigned long long)a[0],
                 (unsigned long long)a[1], (unsigned long long)a[2], (unsigned long long)a[3]);
    else
        snprintf(out, size, "%s(...)", name);
}

/* ------------------------------------------------------------------ what is logged */

struct kind { int32_t nr, code; uint64_t seen; char short_text[SHORT_LEN]; };

static struct {
    struct kind *kinds;
    uint32_t nkinds, capacity, described;   /* described: kinds with their own description */
    uint32_t *slots, nslots;                /* open addressing: index + 1, 0 empty */
    unsigned char *rule_seen, *default_seen; /* decisions whose first refusal was written */
    int unknown_default_seen;
    long long window;
    uint64_t in_window, left_out;
} lim;

static uint32_t hash(int32_t nr, int32_t code, const char *text) {
    uint32_t h = 2166136261u;
    h = (h ^ (uint32_t)nr) * 16777619u;
    h = (h ^ (uint32_t)code) * 16777619u;
    for (; *text; text++)
        h = (h ^ (unsigned char)*text) * 16777619u;
    return h;
}

static const char *limiter_init(void) {
    /* The kinds remembered: max_kinds with their description, and past those one per
     * decision's syscall and errno (denial_monitor.Limiter.count). */
    lim.capacity = cfg.max_kinds + cfg.nrules + MAX_NR + 2;
    for (lim.nslots = 64; lim.nslots < 2 * lim.capacity; lim.nslots *= 2)
        ;
    lim.kinds = zeroed(lim.capacity * sizeof *lim.kinds);
    lim.slots = zeroed(lim.nslots * sizeof *lim.slots);
    lim.rule_seen = zeroed(cfg.nrules + 1);
    lim.default_seen = zeroed(MAX_NR);
    return lim.kinds && lim.slots && lim.rule_seen && lim.default_seen ? NULL : "out of memory";
}

static uint64_t count(int32_t nr, int32_t code, const char *text) {
    uint32_t h, i;
    for (;;) {
        h = hash(nr, code, text) & (lim.nslots - 1);
        for (i = h; lim.slots[i]; i = (i + 1) & (lim.nslots - 1)) {
            struct kind *k = &lim.kinds[lim.slots[i] - 1];
            if (k->nr == nr && k->code == code && !strcmp(k->short_text, text))
                return ++k->seen;
        }
        if (!*text || lim.described < cfg.max_kinds)
            break;
        text = "";              /* past max_kinds: counted under its syscall and errno only */
    }
    if (lim.nkinds >= lim.capacity)     /* cannot happen: the capacity bounds every key */
        return 1;
    if (*text)
        lim.described++;
    lim.kinds[lim.nkinds].nr = nr;
    lim.kinds[lim.nkinds].code = code;
    lim.kinds[lim.nkinds].seen = 1;
    snprintf(lim.kinds[lim.nkinds].short_text, SHORT_LEN, "%s", text);
    lim.slots[i] = ++lim.nkinds;
    return 1;
}

static long long monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static int allows(uint64_t n, int first) {
    long long span = cfg.verbose ? 1 : 60, window;
    uint64_t budget = cfg.verbose ? VERBOSE_PER_SECOND : cfg.lines_per_minute;
    if (!first && !cfg.verbose && !(n <= FIRST || n % EVERY == 0))
        return 0;
    window = monotonic_seconds() / span;
    if (window != lim.window) {
        lim.window = window;
        lim.in_window = 0;
    }
    if (lim.in_window >= budget && !first) {
        lim.left_out++;
        return 0;
    }
    lim.in_window++;
    return 1;
}

/* The "more lines not logged" text, or 0 if none (and counting starts again). */
static int summary(char *out, size_t size) {
    if (!lim.left_out)
        return 0;
    if (cfg.verbose)
        snprintf(out, size, "sandbox: %llu more lines of refusals not logged (at most %d lines a second)",
                 (unsigned long long)lim.left_out, VERBOSE_PER_SECOND);
    else
        snprintf(out, size, "sandbox: %llu more lines of refusals not logged (at most %u lines a minute)",
                 (unsigned long long)lim.left_out, cfg.lines_per_minute);
    lim.left_out = 0;
    return 1;
}

static char who[MAX_LABEL + 1];

/* A log line in the components' format; the date computed here (gmtime may look for the
 * time zone's file, which the confined monitor cannot open). Returns its length. */
static size_t line(char *out, size_t size, const char *text) {
    struct timespec ts;
    long long days, secs, z, era, doe, yoe, y, doy, mp, d, m;
    int n;
    clock_gettime(CLOCK_REALTIME, &ts);
    days = ts.tv_sec / 86400;
    secs = ts.tv_sec % 86400;
    if (secs < 0) {
        secs += 86400;
        days--;
    }
    /* Howard Hinnant's civil_from_days. */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    n = snprintf(out, size, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lldZ [sandbox:%s] [cleancoin.sandbox] WARNING %s\n",
                 y, m, d, secs / 3600, secs / 60 % 60, secs % 60, who, text);
    if (n < 0)
        return 0;
    if ((size_t)n >= size) {            /* cut, but still a line */
        out[size - 2] = '\n';
        return size - 1;
    }
    return (size_t)n;
}

/* ------------------------------------------------------------------ writing (LogWriter) */

static struct { int out, mid_line; uint64_t lost; char why[128]; } writer;

static size_t newlines(const char *s, size_t n) {
    size_t c = 0;
    while (n--)
        c += *s++ == '\n';
    return c;
}

static void write_log(const char *text, size_t len) {
    static char data[3 * LINE_LEN];
    char note[256];
    size_t size = 0, nlen = 0;
    ssize_t written;
    if (writer.mid_line)
        data[size++] = '\n';
    if (writer.lost) {
        snprintf(note, sizeof note, "sandbox: %llu lines of refusals could not be written to this log (%s)",
                 (unsigned long long)writer.lost, writer.why);
        nlen = line(data + size, sizeof data - size - len, note);
        size += nlen;
    }
    memcpy(data + size, text, len);
    size += len;
    do
        written = write(writer.out, data, size);
    while (written < 0 && errno == EINTR);
    if (written < 0) {
        writer.lost += newlines(text, len);
        snprintf(writer.why, sizeof writer.why, "%s", strerrordesc_np(errno) ? strerrordesc_np(errno) : "error");
        return;
    }
    if ((size_t)written < size) {
        if (written)
            writer.mid_line = data[written - 1] != '\n';
        snprintf(writer.why, sizeof writer.why, "the log stopped growing");
    } else
        writer.mid_line = 0;
    if ((size_t)written < size - len)
        writer.lost += newlines(text, len);
    else
        writer.lost = newlines(data + written, size - (size_t)written);
}

static void log_refusal(int32_t nr, const uint64_t *args, uint32_t thread, int32_t code, int32_t rule) {
    static char buf[2 * LINE_LEN];
    char short_text[SHORT_LEN], what[SHORT_LEN + 64], text[LINE_LEN], left[160], tail[48], thread_text[32];
    int first = 0;
    size_t len = 0;
    uint64_t seen;
    const char *errname;
    char errbuf[16];
    /* The decision's syscall: the number where the policy names it, else -1 (bounded). */
    int32_t keynr = rule >= 0 || syscall_name(nr) ? nr : -1;
    describe(short_text, sizeof short_text, nr, args, 0);
    seen = count(keynr, code, short_text);
    if (rule >= 0) {
        first = !lim.rule_seen[rule];
        lim.rule_seen[rule] = 1;
    } else if (keynr >= 0) {
        first = !lim.default_seen[keynr];
        lim.default_seen[keynr] = 1;
    } else {
        first = !lim.unknown_default_seen;
        lim.unknown_default_seen = 1;
    }
    if (!allows(seen, first))
        return;
    describe(what, sizeof what, nr, args, cfg.verbose);
    tail[0] = thread_text[0] = 0;
    if (seen > FIRST && !cfg.verbose)
        snprintf(tail, sizeof tail, " (%llu times)", (unsigned long long)seen);
    if (cfg.verbose)
        snprintf(thread_text, sizeof thread_text, ", thread %u", thread);
    errname = lookup(cfg.errnos, cfg.nerrnos, code);
    if (!errname) {
        snprintf(errbuf, sizeof errbuf, "%d", code);
        errname = errbuf;
    }
    if (summary(left, sizeof left))
        len = line(buf, LINE_LEN, left);
    snprintf(text, sizeof text, "sandbox: refused %s -> %s%s%s", what, errname, thread_text, tail);
    len += line(buf + len, LINE_LEN, text);
    write_log(buf, len);
}

static void stopped(const char *what, int err) {
    /* As denial_monitor.main writes it: the kernel answers ENOSYS without us, still refused. */
    char text[256], buf[LINE_LEN];
    size_t len;
    snprintf(text, sizeof text, "sandbox: the denial monitor stopped (OSError: [Errno %d] %s%s); refusals now "
             "answer ENOSYS, unlogged", err, what, strerrordesc_np(err) ? strerrordesc_np(err) : "");
    len = line(buf, sizeof buf, text);
    while (write(writer.out, buf, len) < 0 && errno == EINTR)
        ;
    _exit(1);
}

static void serve(int listener) {
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    struct pollfd p = {listener, POLLIN, 0};
    char text[160], buf[LINE_LEN];
    for (;;) {
        p.revents = 0;
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            stopped("", errno);
        }
        if (p.revents & POLLIN) {
            int32_t rule, code;
            memset(&req, 0, sizeof req);        /* the kernel refuses a buffer that is not zero */
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
                if (errno == ENOENT || errno == EINTR)
                    continue;                   /* withdrawn: the thread got a signal, or died */
                stopped("", errno);
            }
            code = decide(req.data.nr, (const uint64_t *)req.data.args, &rule);
            memset(&resp, 0, sizeof resp);
            resp.id = req.id;
            resp.error = -code;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT)
                stopped("", errno);
            /* Described after the answer: the refused thread does not wait for its line. */
            log_refusal(req.data.nr, (const uint64_t *)req.data.args, req.pid, code, rule);
        } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
            if (summary(text, sizeof text))
                write_log(buf, line(buf, sizeof buf, text));
            else if (writer.lost)
                write_log("", 0);
            _exit(0);
        }
    }
}

/* ------------------------------------------------------------------ confinement */

static int channel = -1;
static char notes[256];

static void say(const char *data, size_t len) {
    /* write, not send: sendto is outside the monitor's filter (SIGPIPE is ignored). */
    while (write(channel, data, len) < 0 && errno == EINTR)
        ;
}

static void fail(const char *step, const char *fmt, ...) {
    char reason[512], out[600];
    va_list ap;
    int n;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    n = snprintf(out, sizeof out, "E%s: %s", step, reason);
    say(out, n < 0 ? 0 : (size_t)n >= sizeof out ? sizeof out - 1 : (size_t)n);
    _exit(1);
}

static const char *why(void) {
    const char *text = strerrordesc_np(errno);
    return text ? text : "unknown error";
}

static void limit(const char *name, int resource, rlim_t soft, rlim_t hard) {
    /* Lowered to at most (soft, hard), never raised (denial_monitor.limit). */
    struct rlimit old, new;
    if (getrlimit(resource, &old) != 0)
        fail("rlimits", "%s: %s", name, why());
    new.rlim_max = old.rlim_max == RLIM_INFINITY || old.rlim_max > hard ? hard : old.rlim_max;
    new.rlim_cur = old.rlim_cur == RLIM_INFINITY || old.rlim_cur > soft ? soft : old.rlim_cur;
    if (new.rlim_cur > new.rlim_max)
        new.rlim_cur = new.rlim_max;
    if (setrlimit(resource, &new) != 0)
        fail("rlimits", "%s: %s", name, why());
}

static void handled(int abi, uint64_t *fs, uint64_t *net, uint64_t *scoped) {
    /* Every filesystem right by ABI (1: 13 rights, 2: refer, 3: truncate, 5: ioctl_dev), TCP
     * bind and connect (ABI 4), abstract unix and signal scopes (ABI 6): landlock.py's table
     * (tests/test_denial_monitor.py compares the two). */
    static const struct { int abi; uint64_t rights; } FS_BY_ABI[] = {
        {1, (1ULL << 13) - 1}, {2, 1ULL << 13}, {3, 1ULL << 14}, {5, 1ULL << 15},
    };
    unsigned i;
    *fs = 0;
    for (i = 0; i < sizeof FS_BY_ABI / sizeof FS_BY_ABI[0]; i++)
        if (abi >= FS_BY_ABI[i].abi)
            *fs |= FS_BY_ABI[i].rights;
    *net = abi >= 4 ? 3 : 0;
    *scoped = abi >= 6 ? 3 : 0;
}

static void confine(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    struct sock_fprog prog;
    long abi;
    /* 0. its own resource limits, never the component's */
    limit("core", RLIMIT_CORE, 0, 0);
    limit("nofile", RLIMIT_NOFILE, 16, 16);
    limit("as", RLIMIT_AS, 1ULL << 30, 1ULL << 30);
    /* 1. not dumpable; its name */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail("dumpable", "prctl(PR_SET_DUMPABLE): %s", why());
    prctl(PR_SET_NAME, NAME, 0, 0, 0);
    /* 2. no_new_privs, no capability */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail("no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS): %s", why());
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        fail("no_new_privs", "not set");
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, (long)&header, (long)data) != 0)
        fail("capabilities", "capget: %s", why());
    if (data[0].effective || data[0].permitted || data[0].inheritable || data[1].effective || data[1].permitted
        || data[1].inheritable)
        fail("capabilities", "capabilities still held: [%u, %u, %u, %u, %u, %u]", data[0].effective,
             data[0].permitted, data[0].inheritable, data[1].effective, data[1].permitted, data[1].inheritable);
    if (cfg.mdwe && prctl(PR_SET_MDWE, MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0)
        snprintf(notes, sizeof notes, "no memory-deny-write-execute (kernel before 6.3)");
    /* 3. Landlock, granting nothing */
    abi = syscall(SYS_LANDLOCK_CREATE_RULESET, (long)0, (long)0, (long)1 /* LANDLOCK_CREATE_RULESET_VERSION */);
    if (abi < 1) {
        if (cfg.landlock)
            fail("landlock", "the kernel has no Landlock");
        snprintf(notes + strlen(notes), sizeof notes - strlen(notes), "%sno Landlock (the kernel lacks it, as the "
                 "component's plan says)", notes[0] ? "; " : "");
    } else {
        uint64_t attr[3];
        long ruleset;
        int err;
        handled((int)abi, &attr[0], &attr[1], &attr[2]);
        ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, (long)attr, (long)(attr[2] ? 24 : attr[1] ? 16 : 8), (long)0);
        if (ruleset < 0)
            fail("landlock", "landlock_create_ruleset: %s", why());
        err = syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, (long)0) != 0 ? errno : 0;
        close((int)ruleset);
        if (err) {
            errno = err;
            fail("landlock", "landlock_restrict_self: %s", why());
        }
    }
    /* 4. its own seccomp filter */
    if (!cfg.bpf_len || cfg.bpf_len % 8 || cfg.bpf_len / 8 > BPF_MAXINSNS)
        fail("seccomp", "malformed BPF program of %u bytes", cfg.bpf_len);
    prog.len = (unsigned short)(cfg.bpf_len / 8);
    prog.filter = (struct sock_filter *)cfg.bpf;
    if (syscall(SYS_seccomp, (long)SECCOMP_SET_MODE_FILTER, (long)0, (long)&prog) != 0)
        fail("seccomp", "seccomp(SET_MODE_FILTER): %s", why());
}

/* ------------------------------------------------------------------ the configuration */

static unsigned char *read_config(int prelaunched, int *log, size_t *len) {
    /* Prelaunched, the log's descriptor comes on the first bytes (exactly one is taken, any
     * other closed); then the rest until the length says it is whole. */
    static unsigned char head[4];
    unsigned char *data = NULL;
    size_t have = 0, want = 4;
    ssize_t got;
    if (prelaunched) {
        char control[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {head, 4};
        struct msghdr msg = {0};
        struct cmsghdr *cmsg;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        do
            got = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            fail("configuration", "recvmsg: %s", why());
        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
            if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
                size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int), i;
                for (i = 0; i < n; i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
                    if (*log < 0)
                        *log = fd;
                    else
                        close(fd);
                }
            }
        if (got == 0)
            fail("configuration", "the component hung up");
        if (*log < 0)
            fail("configuration", "no log descriptor came with it");
        have = (size_t)got;
    }
    for (;;) {
        if (!data && have == 4) {
            uint32_t n;
            memcpy(&n, head, 4);
            if (n > MAX_CONFIG)
                fail("configuration", "%u bytes, more than %d", n, MAX_CONFIG);
            want = 4 + (size_t)n;
            data = malloc(n ? n : 1);
            if (!data)
                fail("configuration", "out of memory");
        }
        if (have >= want && data)
            break;
        if (!data)
            got = read(channel, head + have, 4 - have);
        else
            got = read(channel, data + (have - 4), want - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            fail("configuration", "read: %s", why());
        if (got == 0)
            fail("configuration", "the component hung up");
        have += (size_t)got;
    }
    *len = want - 4;
    return data;
}

static int receive_listener(void) {
    char control[CMSG_SPACE(sizeof(int))], byte[16];
    struct iovec iov = {byte, sizeof byte};
    struct msghdr msg = {0};
    struct cmsghdr *cmsg;
    ssize_t got;
    int fd = -1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    do
        got = recvmsg(channel, &msg, 0);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return -1;
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS
            && cmsg->cmsg_len >= CMSG_LEN(sizeof(int)) && fd < 0)
            memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
    return fd;
}

static int number(const char *text) {
    char *end;
    long value;
    errno = 0;
    value = strtol(text, &end, 10);
    return errno || end == text || *end || value < 0 || value > 1 << 20 ? -1 : (int)value;
}

int main(int argc, char **argv) {
    static const int ignored[] = {SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGUSR1, SIGUSR2, SIGPIPE};
    unsigned char *config;
    const char *bad;
    size_t len, i;
    int log = -1, listener;
    /* A terminal's or a supervisor's signal to the component's group is the component's: the
     * monitor ends when the filter has no process left (refusals during its shutdown are
     * still answered with their errno). SIGPIPE: a reader of stderr that went away. */
    for (i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        signal(ignored[i], SIG_IGN);
    if (argc != 2 && argc != 3)
        return 2;
    channel = number(argv[1]);
    if (channel < 0)
        return 2;
    if (argc == 3 && (log = number(argv[2])) < 0)
        fail("setup", "bad log descriptor %s", argv[2]);
    config = read_config(argc == 2, &log, &len);
    bad = parse(config, len);
    if (bad)
        fail("configuration", "malformed: %s", bad);
    bad = limiter_init();
    if (bad)
        fail("setup", "%s", bad);
    snprintf(who, sizeof who, "%s", cfg.label);
    if (!who[0])
        snprintf(who, sizeof who, "%u", cfg.target);
    writer.out = log;
    confine();
    /* Confined: from here on, what arrives is the component's and is only parsed as numbers. */
    {
        char answer[sizeof notes + 1];
        int n = snprintf(answer, sizeof answer, "R%s", notes);
        say(answer, (size_t)n);
    }
    listener = receive_listener();
    close(channel);
    if (listener < 0)
        return 0;
    serve(listener);
    return 0;
}
