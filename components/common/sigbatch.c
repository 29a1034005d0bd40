/* A block's signature checks on helper threads that never take the GIL (sigcheck.py).
 *
 * Through coincurve every signature was three cffi calls (pubkey parse, DER parse,
 * verify), each giving the GIL up and taking it back, and a helper thread woken for work
 * needed the GIL again to pick it up: with the connecting thread running Python beside
 * (the block's other checks, its writes), a helper waited for the GIL at every step, up to
 * the interpreter's switch interval (5 ms) each time. Here the helpers are Python threads
 * that enter cc_sigpool_serve once (through ctypes, which releases the GIL for the call)
 * and stay in C until the pool stops: they take records from the block being connected
 * while the connecting thread is still preparing the next ones, and run all three
 * libsecp256k1 steps of each in C.
 *
 * libsecp256k1 itself is coincurve's (its extension module exports the functions): the
 * caller passes their addresses and coincurve's context, so the verdict is libsecp256k1's
 * as it is through coincurve (keys.check_signature): a pubkey that is not a curve point,
 * DER it cannot parse or a signature that does not verify is invalid.
 *
 * One owner thread (the chain's, under its lock) runs one job at a time: begin, publish
 * records as they are prepared, finish (which verifies what is left on the owner's thread
 * too). Records are claimed with a compare-and-swap and verdicts stored atomically: no lock
 * is held while a record is claimed or verified, so a helper the scheduler preempts (a
 * loaded machine) never holds the owner up; the mutex only puts idle helpers to sleep and
 * wakes them at a publish. A job is reference-counted: the owner may leave it while a
 * helper is still in the middle of a record, and the last holder frees it.
 *
 * Built by setup.py into the package beside sigbatch.py (cc -O2 -shared -fPIC -pthread).
 */

#include <pthread.h>
#include <time.h>
#include <stddef.h>
#include <stdlib.h>

/* One record: pubkey[33] digest[32] der_len[1] der[72]. A low-S strict-DER signature
 * without its sighash byte is at most 72 bytes (keys.is_valid_signature_encoding). */
#define PUB_LEN 33
#define DIGEST_LEN 32
#define DER_MAX 72
#define RECORD_LEN (PUB_LEN + DIGEST_LEN + 1 + DER_MAX)

/* libsecp256k1's opaque secp256k1_pubkey and secp256k1_ecdsa_signature: 64 bytes each. */
typedef struct { unsigned char data[64]; } pubkey_t;
typedef struct { unsigned char data[64]; } signature_t;

typedef int (*pubkey_parse_fn)(const void *ctx, pubkey_t *out, const unsigned char *in, size_t len);
typedef int (*der_parse_fn)(const void *ctx, signature_t *out, const unsigned char *in, size_t len);
typedef int (*verify_fn)(const void *ctx, const signature_t *sig, const unsigned char *msg32,
                         const pubkey_t *pub);

struct secp {
    const void *ctx;
    pubkey_parse_fn pubkey_parse;
    der_parse_fn der_parse;
    verify_fn verify;
};

struct job {
    unsigned char *records;    /* capacity records, written by the owner before publishing */
    unsigned char *verdicts;   /* 0 not verified yet, 1 valid, 2 invalid (atomic) */
    long capacity;
    long published;            /* records [0, published) may be claimed (atomic) */
    long next;                 /* the next record to claim (atomic, compare-and-swap) */
    int aborted;               /* claim nothing more (atomic) */
    int refs;                  /* the owner and each helper holding it (atomic): the last frees */
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work;       /* helpers sleep here until a publish or stop */
    struct secp s;
    struct job *job;           /* the job being run, or NULL (under mu) */
    unsigned long seq;         /* publishes so far (under mu) */
    int stop;                  /* under mu */
};

int cc_sigbatch_record_len(void) { return RECORD_LEN; }

static int verify_record(const struct secp *s, const unsigned char *r)
{
    size_t der_len = r[PUB_LEN + DIGEST_LEN];
    pubkey_t pub;
    signature_t sig;
    return der_len <= DER_MAX
           && s->pubkey_parse(s->ctx, &pub, r, PUB_LEN)
           && s->der_parse(s->ctx, &sig, r + PUB_LEN + DIGEST_LEN + 1, der_len)
           && s->verify(s->ctx, &sig, r + PUB_LEN, &pub);
}

/* How long the owner waits for a record a helper is verifying before it verifies the
 * record itself: about two verifications. */
#define GRACE_NS 100000L

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void job_free(struct job *j)
{
    free(j->records);
    free(j->verdicts);
    free(j);
}

static void job_release(struct job *j)
{
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0)
        job_free(j);
}

/* Claim the next published record, or -1. Lock-free: a helper the scheduler preempts holds
 * no lock, so the owner never waits for it here. */
static long claim(struct job *j)
{
    long i = __atomic_load_n(&j->next, __ATOMIC_RELAXED);
    for (;;) {
        if (__atomic_load_n(&j->aborted, __ATOMIC_ACQUIRE)
            || i >= __atomic_load_n(&j->published, __ATOMIC_ACQUIRE))
            return -1;
        if (__atomic_compare_exchange_n(&j->next, &i, i + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return i;
    }
}

static void verify_into(const struct secp *s, struct job *j, long i)
{
    unsigned char v = verify_record(s, j->records + (size_t)i * RECORD_LEN) ? 1 : 2;
    __atomic_store_n(&j->verdicts[i], v, __ATOMIC_RELEASE);
}

struct pool *cc_sigpool_new(const struct secp *s)
{
    struct pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    p->s = *s;
    return p;
}

/* A helper thread's whole life: verify records of whatever job runs until the pool stops.
 * It holds a reference to the job while it works on it, so the owner may finish (and drop
 * its own reference) while a helper is still in the middle of a record. */
void cc_sigpool_serve(struct pool *p)
{
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->seq == seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        seen = p->seq;
        struct job *j = p->job;
        if (j == NULL)
            continue;
        __atomic_add_fetch(&j->refs, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_unlock(&p->mu);
        long i;
        while ((i = claim(j)) >= 0)
            verify_into(&p->s, j, i);
        job_release(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Make every helper leave cc_sigpool_serve (no job may be running); returns at once, the
 * caller joins its threads, then calls cc_sigpool_free. */
void cc_sigpool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void cc_sigpool_free(struct pool *p)
{
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* A job of at most `capacity` records, made the pool's current one. NULL: out of memory,
 * or another job is running. */
struct job *cc_sigpool_begin(struct pool *p, long capacity)
{
    if (capacity < 1)
        capacity = 1;
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->records = malloc((size_t)capacity * RECORD_LEN);
    j->verdicts = calloc((size_t)capacity, 1);
    if (j->records == NULL || j->verdicts == NULL) {
        job_free(j);
        return NULL;
    }
    j->capacity = capacity;
    j->refs = 1;
    pthread_mutex_lock(&p->mu);
    if (p->job != NULL) {
        pthread_mutex_unlock(&p->mu);
        job_free(j);
        return NULL;
    }
    p->job = j;
    pthread_mutex_unlock(&p->mu);
    return j;
}

unsigned char *cc_sigjob_records(struct job *j) { return j->records; }

/* Records [0, n) are written: the helpers may take them. n only grows, up to capacity. */
int cc_sigpool_publish(struct pool *p, struct job *j, long n)
{
    if (n < j->published || n > j->capacity)
        return -1;
    __atomic_store_n(&j->published, n, __ATOMIC_RELEASE);
    pthread_mutex_lock(&p->mu);
    p->seq++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* End the job; the owner's reference is dropped (the job is freed by whoever holds the
 * last one: the handle must not be used again). With `help`, verify on this thread what no
 * helper took; a record a helper took but has not finished is given a moment (a helper
 * that runs finishes one in tens of microseconds), then verified here too: a helper the
 * scheduler preempted in the middle of one does not hold the block up (both reach the same
 * verdict). Without `help` (the block failed another rule) nothing more is claimed and
 * nothing waited for. Returns the number of records claimed (each by exactly one thread);
 * *first_bad is the lowest index of an invalid one, or -1 (always -1 without `help`). */
long cc_sigpool_finish(struct pool *p, struct job *j, int help, long *first_bad)
{
    long claimed, bad = -1;
    if (!help) {
        __atomic_store_n(&j->aborted, 1, __ATOMIC_RELEASE);
        claimed = __atomic_load_n(&j->next, __ATOMIC_ACQUIRE);
    } else {
        long i;
        while ((i = claim(j)) >= 0)
            verify_into(&p->s, j, i);
        claimed = __atomic_load_n(&j->next, __ATOMIC_ACQUIRE);
        for (i = 0; i < claimed; i++) {
            unsigned char v = __atomic_load_n(&j->verdicts[i], __ATOMIC_ACQUIRE);
            if (v == 0) {
                long deadline = now_ns() + GRACE_NS;
                while (v == 0 && now_ns() < deadline) {
                    cpu_relax();
                    v = __atomic_load_n(&j->verdicts[i], __ATOMIC_ACQUIRE);
                }
            }
            if (v == 0) {
                verify_into(&p->s, j, i);
                v = __atomic_load_n(&j->verdicts[i], __ATOMIC_ACQUIRE);
            }
            if (v != 1 && bad < 0)
                bad = i;
        }
    }
    pthread_mutex_lock(&p->mu);
    p->job = NULL;
    pthread_mutex_unlock(&p->mu);
    job_release(j);
    *first_bad = bad;
    return claimed;
}
