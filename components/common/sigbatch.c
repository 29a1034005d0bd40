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
 * too and waits for the helpers' last ones). Everything shared is under one mutex; a
 * verification (~40 us) is done outside it.
 *
 * Built by setup.py into the package beside sigbatch.py (cc -O2 -shared -fPIC -pthread).
 */

#include <pthread.h>
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
    unsigned char *verdicts;   /* 0 not verified, 1 valid, 2 invalid */
    long capacity;
    long published;            /* records [0, published) may be claimed */
    long next;                 /* the next record to claim */
    long finished;             /* records claimed and verified */
    int closed;                /* the owner publishes no more */
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work;       /* helpers wait here: a record to claim, or stop */
    pthread_cond_t done;       /* the owner waits here: the claimed records verified */
    struct secp s;
    struct job *job;           /* the job being run, or NULL */
    int stop;
    int serving;               /* helpers inside cc_sigpool_serve */
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

/* With p->mu held: claim a record of the current job, verify it without the lock, record
 * the verdict. Returns 0 when there was none to claim. */
static int work_one(struct pool *p)
{
    struct job *j = p->job;
    if (j == NULL || j->next >= j->published)
        return 0;
    long i = j->next++;
    pthread_mutex_unlock(&p->mu);
    int ok = verify_record(&p->s, j->records + (size_t)i * RECORD_LEN);
    pthread_mutex_lock(&p->mu);
    j->verdicts[i] = ok ? 1 : 2;
    j->finished++;
    if (j->closed && j->finished == j->next)
        pthread_cond_broadcast(&p->done);
    return 1;
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
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    p->s = *s;
    return p;
}

/* A helper thread's whole life: verify records of whatever job runs until the pool stops. */
void cc_sigpool_serve(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->serving++;
    while (!p->stop) {
        if (!work_one(p))
            pthread_cond_wait(&p->work, &p->mu);
    }
    p->serving--;
    pthread_cond_broadcast(&p->done);
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
    pthread_cond_destroy(&p->done);
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
        free(j->records);
        free(j->verdicts);
        free(j);
        return NULL;
    }
    j->capacity = capacity;
    pthread_mutex_lock(&p->mu);
    if (p->job != NULL) {
        pthread_mutex_unlock(&p->mu);
        free(j->records);
        free(j->verdicts);
        free(j);
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
    pthread_mutex_lock(&p->mu);
    j->published = n;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* End the job. With `help`, verify what no helper took yet on this thread and wait for the
 * helpers' last ones; without (the block failed another rule), take nothing more and wait
 * only for the records being verified. Then the job is no longer the pool's. Returns the
 * number of records verified; *first_bad is the lowest index of an invalid one, or -1. */
long cc_sigpool_finish(struct pool *p, struct job *j, int help, long *first_bad)
{
    pthread_mutex_lock(&p->mu);
    j->closed = 1;
    if (!help)
        j->published = j->next;
    for (;;) {
        if (help && work_one(p))
            continue;
        if (j->finished == j->next)
            break;
        pthread_cond_wait(&p->done, &p->mu);
    }
    p->job = NULL;
    pthread_mutex_unlock(&p->mu);
    long bad = -1;
    for (long i = 0; i < j->finished; i++) {
        if (j->verdicts[i] != 1) {
            bad = i;
            break;
        }
    }
    *first_bad = bad;
    return j->finished;
}

void cc_sigjob_free(struct job *j)
{
    free(j->records);
    free(j->verdicts);
    free(j);
}
