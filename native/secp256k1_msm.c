/*
 * Multi-scalar multiplication on secp256k1 for batch verification (issue 15).
 *
 * Variable time on purpose: it only ever sees public data (ballot proofs, verifier weights).
 * Field elements are 4 x 64-bit little-endian limbs, always fully reduced below p, with
 * unsigned __int128 products; points are Jacobian (X/Z^2, Y/Z^3). The multiplication is
 * Pippenger's bucket method with signed window digits.
 *
 * Python surface (module referendum_core._secp256k1):
 *   decode_point(data) -> 65 bytes   SEC1 33- or 65-byte point, checked; ValueError if not
 *   multi_mul(points, scalars) -> 65 bytes   sum k_i P_i, 65 zero bytes for the identity
 *   multi_mul_is_identity(points, scalars) -> bool
 *   first_invalid_point(data) -> index of the first bad 65-byte point of data, or -1
 * points: n x 65 bytes uncompressed (65 zero bytes = the identity); scalars: n x 32 bytes
 * big-endian, each below the group order. Any bad encoding raises ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef struct { uint64_t v[4]; } fe;
typedef struct { fe x, y, z; int inf; } gej;
typedef struct { fe x, y; int inf; } ge;

static const fe FE_P = {{0xFFFFFFFEFFFFFC2FULL, 0xFFFFFFFFFFFFFFFFULL,
                         0xFFFFFFFFFFFFFFFFULL, 0xFFFFFFFFFFFFFFFFULL}};
static const uint64_t ORDER_N[4] = {0xBFD25E8CD0364141ULL, 0xBAAEDCE6AF48A03BULL,
                                    0xFFFFFFFFFFFFFFFEULL, 0xFFFFFFFFFFFFFFFFULL};
#define REDC 0x1000003D1ULL /* 2^256 - p */

/* Field elements are kept weakly reduced: any 256-bit value, congruent mod p. fe_normalize
 * gives the unique representative below p (needed only to compare and to serialise). */
static void fe_normalize(fe *r, const fe *a) {
    /* a >= p iff a + REDC overflows 2^256; then a - p = a + REDC mod 2^256 */
    uint64_t t[4];
    u128 c = (u128)a->v[0] + REDC;
    t[0] = (uint64_t)c; c >>= 64;
    for (int i = 1; i < 4; i++) { c += a->v[i]; t[i] = (uint64_t)c; c >>= 64; }
    if (c) memcpy(r->v, t, sizeof t); else *r = *a;
}

static int fe_is_zero(const fe *a) {
    fe n;
    fe_normalize(&n, a);
    return (n.v[0] | n.v[1] | n.v[2] | n.v[3]) == 0;
}

static int fe_eq(const fe *a, const fe *b) {
    fe x, y;
    fe_normalize(&x, a);
    fe_normalize(&y, b);
    return ((x.v[0] ^ y.v[0]) | (x.v[1] ^ y.v[1]) | (x.v[2] ^ y.v[2]) | (x.v[3] ^ y.v[3])) == 0;
}

/* 4-limb little-endian a < b */
static int limbs_lt(const uint64_t *a, const uint64_t *b) {
    for (int i = 3; i >= 0; i--) {
        if (a[i] != b[i]) return a[i] < b[i];
    }
    return 0;
}

/* r = s + carry*2^256 (mod p), weakly reduced: each carry folds back as REDC. */
static inline void fe_settle(fe *r, const uint64_t s[4], uint64_t carry) {
    uint64_t t0 = s[0], t1 = s[1], t2 = s[2], t3 = s[3];
    while (carry) {
        u128 c = (u128)t0 + REDC * carry;
        t0 = (uint64_t)c; c >>= 64;
        c += t1; t1 = (uint64_t)c; c >>= 64;
        c += t2; t2 = (uint64_t)c; c >>= 64;
        c += t3; t3 = (uint64_t)c; c >>= 64;
        carry = (uint64_t)c;
    }
    r->v[0] = t0; r->v[1] = t1; r->v[2] = t2; r->v[3] = t3;
}

static void fe_add(fe *r, const fe *a, const fe *b) {
    uint64_t s[4];
    u128 c = 0;
    for (int i = 0; i < 4; i++) { c += (u128)a->v[i] + b->v[i]; s[i] = (uint64_t)c; c >>= 64; }
    fe_settle(r, s, (uint64_t)c);
}

static void fe_sub(fe *r, const fe *a, const fe *b) {
    uint64_t s[4];
    uint64_t borrow = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)a->v[i] - b->v[i] - borrow;
        s[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    while (borrow) { /* wrapped by 2^256: take 2^256 - p = REDC back off */
        u128 d = (u128)s[0] - REDC;
        s[0] = (uint64_t)d; borrow = (uint64_t)(d >> 64) & 1;
        for (int i = 1; i < 4; i++) {
            d = (u128)s[i] - borrow;
            s[i] = (uint64_t)d; borrow = (uint64_t)(d >> 64) & 1;
        }
    }
    memcpy(r->v, s, sizeof s);
}

static void fe_neg(fe *r, const fe *a) {
    fe zero = {{0, 0, 0, 0}};
    fe_sub(r, &zero, a);
}

/* r = t mod p for a 512-bit t (8 limbs), using 2^256 = REDC (mod p). */
static inline void fe_reduce512(fe *r, const uint64_t t[8]) {
    uint64_t s[4];
    u128 c = (u128)t[4] * REDC + t[0];
    s[0] = (uint64_t)c; c >>= 64;
    c += (u128)t[5] * REDC + t[1];
    s[1] = (uint64_t)c; c >>= 64;
    c += (u128)t[6] * REDC + t[2];
    s[2] = (uint64_t)c; c >>= 64;
    c += (u128)t[7] * REDC + t[3];
    s[3] = (uint64_t)c; c >>= 64;
    /* value = s + c*2^256 with c < 2^34: fold c once more */
    u128 x = c * REDC;
    c = (u128)s[0] + (uint64_t)x; s[0] = (uint64_t)c; c >>= 64;
    c += (u128)s[1] + (uint64_t)(x >> 64); s[1] = (uint64_t)c; c >>= 64;
    c += s[2]; s[2] = (uint64_t)c; c >>= 64;
    c += s[3]; s[3] = (uint64_t)c; c >>= 64;
    /* a carry here leaves s tiny, so s + carry*2^256 < 2p */
    fe_settle(r, s, (uint64_t)c);
}

static void fe_mul(fe *r, const fe *a, const fe *b) {
    uint64_t t[8];
    const uint64_t *x = a->v, *y = b->v;
    u128 p;
    uint64_t carry;
    p = (u128)x[0] * y[0]; t[0] = (uint64_t)p; carry = (uint64_t)(p >> 64);
    p = (u128)x[0] * y[1] + carry; t[1] = (uint64_t)p; carry = (uint64_t)(p >> 64);
    p = (u128)x[0] * y[2] + carry; t[2] = (uint64_t)p; carry = (uint64_t)(p >> 64);
    p = (u128)x[0] * y[3] + carry; t[3] = (uint64_t)p; t[4] = (uint64_t)(p >> 64);
    for (int i = 1; i < 4; i++) {
        p = (u128)x[i] * y[0] + t[i]; t[i] = (uint64_t)p; carry = (uint64_t)(p >> 64);
        p = (u128)x[i] * y[1] + t[i + 1] + carry; t[i + 1] = (uint64_t)p; carry = (uint64_t)(p >> 64);
        p = (u128)x[i] * y[2] + t[i + 2] + carry; t[i + 2] = (uint64_t)p; carry = (uint64_t)(p >> 64);
        p = (u128)x[i] * y[3] + t[i + 3] + carry; t[i + 3] = (uint64_t)p; t[i + 4] = (uint64_t)(p >> 64);
    }
    fe_reduce512(r, t);
}

static void fe_sqr(fe *r, const fe *a) {
    const uint64_t *x = a->v;
    uint64_t t[8];
    /* off-diagonal products once, doubled, plus the squares */
    u128 p;
    uint64_t c;
    p = (u128)x[0] * x[1]; t[1] = (uint64_t)p; c = (uint64_t)(p >> 64);
    p = (u128)x[0] * x[2] + c; t[2] = (uint64_t)p; c = (uint64_t)(p >> 64);
    p = (u128)x[0] * x[3] + c; t[3] = (uint64_t)p; t[4] = (uint64_t)(p >> 64);
    p = (u128)x[1] * x[2] + t[3]; t[3] = (uint64_t)p; c = (uint64_t)(p >> 64);
    p = (u128)x[1] * x[3] + t[4] + c; t[4] = (uint64_t)p; t[5] = (uint64_t)(p >> 64);
    p = (u128)x[2] * x[3] + t[5]; t[5] = (uint64_t)p; t[6] = (uint64_t)(p >> 64);
    t[7] = t[6] >> 63;
    t[6] = (t[6] << 1) | (t[5] >> 63);
    t[5] = (t[5] << 1) | (t[4] >> 63);
    t[4] = (t[4] << 1) | (t[3] >> 63);
    t[3] = (t[3] << 1) | (t[2] >> 63);
    t[2] = (t[2] << 1) | (t[1] >> 63);
    t[1] = t[1] << 1;
    p = (u128)x[0] * x[0]; t[0] = (uint64_t)p; c = (uint64_t)(p >> 64);
    u128 s = (u128)t[1] + c; t[1] = (uint64_t)s; s >>= 64;
    p = (u128)x[1] * x[1];
    s += (u128)t[2] + (uint64_t)p; t[2] = (uint64_t)s; s >>= 64;
    s += (u128)t[3] + (uint64_t)(p >> 64); t[3] = (uint64_t)s; s >>= 64;
    p = (u128)x[2] * x[2];
    s += (u128)t[4] + (uint64_t)p; t[4] = (uint64_t)s; s >>= 64;
    s += (u128)t[5] + (uint64_t)(p >> 64); t[5] = (uint64_t)s; s >>= 64;
    p = (u128)x[3] * x[3];
    s += (u128)t[6] + (uint64_t)p; t[6] = (uint64_t)s; s >>= 64;
    s += (u128)t[7] + (uint64_t)(p >> 64); t[7] = (uint64_t)s;
    fe_reduce512(r, t);
}

static void fe_sqr_n(fe *r, const fe *a, int n) {
    *r = *a;
    for (int i = 0; i < n; i++) fe_sqr(r, r);
}

/* a^e where e = (2^223 - 1) ‖ 0 ‖ (2^22 - 1) ‖ tail (tail_len bits): both p - 2 and
 * (p + 1) / 4 have this shape, so one addition chain of x_k = a^(2^k - 1) serves both
 * (about 255 squarings and 15 multiplications instead of ~500 operations). */
static void fe_pow_shaped(fe *r, const fe *a, unsigned tail, int tail_len) {
    fe x2, x3, x6, x9, x11, x22, x44, x88, x176, x220, x223, t;
    fe_sqr(&x2, a);
    fe_mul(&x2, &x2, a);
    fe_sqr(&x3, &x2);
    fe_mul(&x3, &x3, a);
    fe_sqr_n(&x6, &x3, 3);
    fe_mul(&x6, &x6, &x3);
    fe_sqr_n(&x9, &x6, 3);
    fe_mul(&x9, &x9, &x3);
    fe_sqr_n(&x11, &x9, 2);
    fe_mul(&x11, &x11, &x2);
    fe_sqr_n(&x22, &x11, 11);
    fe_mul(&x22, &x22, &x11);
    fe_sqr_n(&x44, &x22, 22);
    fe_mul(&x44, &x44, &x22);
    fe_sqr_n(&x88, &x44, 44);
    fe_mul(&x88, &x88, &x44);
    fe_sqr_n(&x176, &x88, 88);
    fe_mul(&x176, &x176, &x88);
    fe_sqr_n(&x220, &x176, 44);
    fe_mul(&x220, &x220, &x44);
    fe_sqr_n(&x223, &x220, 3);
    fe_mul(&x223, &x223, &x3);
    fe_sqr_n(&t, &x223, 23); /* the 0 bit, then room for 22 ones */
    fe_mul(&t, &t, &x22);
    for (int i = tail_len - 1; i >= 0; i--) {
        fe_sqr(&t, &t);
        if ((tail >> i) & 1) fe_mul(&t, &t, a);
    }
    *r = t;
}

static void fe_inv(fe *r, const fe *a) { fe_pow_shaped(r, a, 0x2D, 10); /* 0000101101 */ }

/* a square root of a if one exists (returns 1), by a^((p+1)/4) since p = 3 mod 4 */
static int fe_sqrt(fe *r, const fe *a) {
    fe root, check;
    fe_pow_shaped(&root, a, 0x0C, 8); /* 00001100 */
    fe_sqr(&check, &root);
    if (!fe_eq(&check, a)) return 0;
    *r = root;
    return 1;
}

static void fe_from_be(fe *r, const unsigned char *b) {
    for (int i = 0; i < 4; i++) {
        uint64_t w = 0;
        for (int j = 0; j < 8; j++) w = (w << 8) | b[(3 - i) * 8 + j];
        r->v[i] = w;
    }
}

static void fe_to_be(unsigned char *b, const fe *in) {
    fe n;
    fe_normalize(&n, in);
    const fe *a = &n;
    for (int i = 0; i < 4; i++) {
        uint64_t w = a->v[i];
        for (int j = 7; j >= 0; j--) { b[(3 - i) * 8 + j] = (unsigned char)w; w >>= 8; }
    }
}

/* y^2 == x^3 + 7 */
static int on_curve(const fe *x, const fe *y) {
    fe lhs, rhs, seven = {{7, 0, 0, 0}};
    fe_sqr(&lhs, y);
    fe_sqr(&rhs, x);
    fe_mul(&rhs, &rhs, x);
    fe_add(&rhs, &rhs, &seven);
    return fe_eq(&lhs, &rhs);
}

/* ---- points ------------------------------------------------------------------------- */

static void gej_double(gej *r, const gej *a) {
    if (a->inf || fe_is_zero(&a->y)) { r->inf = 1; return; }
    fe A, B, C, D, E, F, t;
    fe_sqr(&A, &a->x);
    fe_sqr(&B, &a->y);
    fe_sqr(&C, &B);
    fe_add(&t, &a->x, &B);
    fe_sqr(&t, &t);
    fe_sub(&t, &t, &A);
    fe_sub(&t, &t, &C);
    fe_add(&D, &t, &t);
    fe_add(&E, &A, &A);
    fe_add(&E, &E, &A);
    fe_sqr(&F, &E);
    fe z3;
    fe_mul(&z3, &a->y, &a->z);
    fe_add(&z3, &z3, &z3);
    fe x3;
    fe_sub(&x3, &F, &D);
    fe_sub(&x3, &x3, &D);
    fe y3;
    fe_sub(&t, &D, &x3);
    fe_mul(&y3, &E, &t);
    fe_add(&C, &C, &C);
    fe_add(&C, &C, &C);
    fe_add(&C, &C, &C);
    fe_sub(&y3, &y3, &C);
    r->x = x3; r->y = y3; r->z = z3; r->inf = 0;
}

/* r = a + b with b affine (negated when neg) */
static void gej_add_ge(gej *r, const gej *a, const ge *b, int neg) {
    if (b->inf) { *r = *a; return; }
    fe by = b->y;
    if (neg) fe_neg(&by, &b->y);
    if (a->inf) {
        r->x = b->x; r->y = by; r->z = (fe){{1, 0, 0, 0}}; r->inf = 0;
        return;
    }
    fe z1z1, u2, s2, h, rr, hh, hhh, v, t;
    fe_sqr(&z1z1, &a->z);
    fe_mul(&u2, &b->x, &z1z1);
    fe_mul(&s2, &by, &a->z);
    fe_mul(&s2, &s2, &z1z1);
    fe_sub(&h, &u2, &a->x);
    fe_sub(&rr, &s2, &a->y);
    if (fe_is_zero(&h)) {
        if (fe_is_zero(&rr)) { gej_double(r, a); } else { r->inf = 1; }
        return;
    }
    fe_sqr(&hh, &h);
    fe_mul(&hhh, &h, &hh);
    fe_mul(&v, &a->x, &hh);
    fe x3, y3, z3;
    fe_sqr(&x3, &rr);
    fe_sub(&x3, &x3, &hhh);
    fe_sub(&x3, &x3, &v);
    fe_sub(&x3, &x3, &v);
    fe_sub(&t, &v, &x3);
    fe_mul(&y3, &rr, &t);
    fe_mul(&t, &a->y, &hhh);
    fe_sub(&y3, &y3, &t);
    fe_mul(&z3, &a->z, &h);
    r->x = x3; r->y = y3; r->z = z3; r->inf = 0;
}

static void gej_add(gej *r, const gej *a, const gej *b) {
    if (a->inf) { *r = *b; return; }
    if (b->inf) { *r = *a; return; }
    fe z1z1, z2z2, u1, u2, s1, s2, h, rr, hh, hhh, v, t;
    fe_sqr(&z1z1, &a->z);
    fe_sqr(&z2z2, &b->z);
    fe_mul(&u1, &a->x, &z2z2);
    fe_mul(&u2, &b->x, &z1z1);
    fe_mul(&s1, &a->y, &b->z);
    fe_mul(&s1, &s1, &z2z2);
    fe_mul(&s2, &b->y, &a->z);
    fe_mul(&s2, &s2, &z1z1);
    fe_sub(&h, &u2, &u1);
    fe_sub(&rr, &s2, &s1);
    if (fe_is_zero(&h)) {
        if (fe_is_zero(&rr)) { gej_double(r, a); } else { r->inf = 1; }
        return;
    }
    fe_sqr(&hh, &h);
    fe_mul(&hhh, &h, &hh);
    fe_mul(&v, &u1, &hh);
    fe x3, y3, z3;
    fe_sqr(&x3, &rr);
    fe_sub(&x3, &x3, &hhh);
    fe_sub(&x3, &x3, &v);
    fe_sub(&x3, &x3, &v);
    fe_sub(&t, &v, &x3);
    fe_mul(&y3, &rr, &t);
    fe_mul(&t, &s1, &hhh);
    fe_sub(&y3, &y3, &t);
    fe_mul(&z3, &a->z, &b->z);
    fe_mul(&z3, &z3, &h);
    r->x = x3; r->y = y3; r->z = z3; r->inf = 0;
}

static void gej_to_bytes(unsigned char out[65], const gej *a) {
    if (a->inf) { memset(out, 0, 65); return; }
    fe zi, zi2, zi3, x, y;
    fe_inv(&zi, &a->z);
    fe_sqr(&zi2, &zi);
    fe_mul(&zi3, &zi2, &zi);
    fe_mul(&x, &a->x, &zi2);
    fe_mul(&y, &a->y, &zi3);
    out[0] = 4;
    fe_to_be(out + 1, &x);
    fe_to_be(out + 33, &y);
}

/* ---- parsing ------------------------------------------------------------------------ */

/* SEC1 point (33 or 65 bytes) -> affine; NULL on success, else the reason. */
static const char *parse_point(ge *r, const unsigned char *data, Py_ssize_t len,
                               int allow_identity) {
    if (len == 65) {
        if (data[0] != 4) {
            for (int i = 0; i < 65; i++) {
                if (data[i]) return "uncompressed point must start with 04";
            }
            if (!allow_identity) return "identity element not allowed here";
            r->inf = 1;
            return NULL;
        }
        fe_from_be(&r->x, data + 1);
        fe_from_be(&r->y, data + 33);
        if (!limbs_lt(r->x.v, FE_P.v) || !limbs_lt(r->y.v, FE_P.v))
            return "coordinate not below the field prime";
        if (!on_curve(&r->x, &r->y)) return "not a point on secp256k1";
        r->inf = 0;
        return NULL;
    }
    if (len == 33) {
        if (data[0] != 2 && data[0] != 3) return "compressed point must start with 02 or 03";
        fe rhs, seven = {{7, 0, 0, 0}};
        fe_from_be(&r->x, data + 1);
        if (!limbs_lt(r->x.v, FE_P.v)) return "coordinate not below the field prime";
        fe_sqr(&rhs, &r->x);
        fe_mul(&rhs, &rhs, &r->x);
        fe_add(&rhs, &rhs, &seven);
        if (!fe_sqrt(&r->y, &rhs)) return "not a point on secp256k1";
        fe_normalize(&r->y, &r->y);
        if ((int)(r->y.v[0] & 1) != (data[0] & 1)) fe_neg(&r->y, &r->y);
        r->inf = 0;
        return NULL;
    }
    return "a point is 33 or 65 bytes";
}

static int parse_scalar(uint64_t k[4], const unsigned char *b) {
    for (int i = 0; i < 4; i++) {
        uint64_t w = 0;
        for (int j = 0; j < 8; j++) w = (w << 8) | b[(3 - i) * 8 + j];
        k[i] = w;
    }
    return limbs_lt(k, ORDER_N);
}


/* ---- batch-affine bucket accumulation -------------------------------------------------
 * A window's buckets are affine points. The additions of one round (at most one pending
 * per bucket) share one field inversion (Montgomery's trick), so an addition costs about 6
 * multiplications instead of a mixed Jacobian addition's 11. A point whose bucket already
 * has a pending addition waits for the next round. */

#define ROUND_MAX 4096
#define ROUND_MIN 96 /* below this a round's inversion outweighs its savings (tuned by measurement) */

typedef struct {
    fe *den, *num, *acc;    /* per pending addition: denominator, numerator, prefix product */
    int32_t *bucket;        /* its bucket */
    const ge **point;       /* its input point */
    fe *qy;                 /* the input's y, negated for a negative digit */
    uint32_t *busy;         /* per bucket: round stamp of its pending addition */
    Py_ssize_t *todo, *next; /* this round's points and the deferred ones */
    int32_t *dig, *dnext;   /* their digits */
} scratch_t;

static void settle_round(ge *buckets, scratch_t *sc, int count) {
    if (count == 0) return;
    sc->acc[0] = sc->den[0];
    for (int k = 1; k < count; k++) fe_mul(&sc->acc[k], &sc->acc[k - 1], &sc->den[k]);
    fe inv;
    fe_inv(&inv, &sc->acc[count - 1]);
    for (int k = count - 1; k >= 0; k--) {
        fe inv_k;
        if (k > 0) {
            fe_mul(&inv_k, &inv, &sc->acc[k - 1]);
            fe_mul(&inv, &inv, &sc->den[k]);
        } else {
            inv_k = inv;
        }
        ge *b = &buckets[sc->bucket[k]];
        const ge *q = sc->point[k];
        fe lambda, x3, y3, t;
        fe_mul(&lambda, &sc->num[k], &inv_k);
        fe_sqr(&x3, &lambda);
        fe_sub(&x3, &x3, &b->x);
        fe_sub(&x3, &x3, &q->x);
        fe_sub(&t, &b->x, &x3);
        fe_mul(&y3, &lambda, &t);
        fe_sub(&y3, &y3, &b->y);
        b->x = x3;
        b->y = y3;
    }
}

/* buckets[|d|-1] += sign(d)·P_i for the points of one window (todo/dig filled by caller). */
static void accumulate_window(ge *buckets, gej *extra, int half, const ge *pts,
                              Py_ssize_t todo_n, scratch_t *sc) {
    static const fe THREE = {{3, 0, 0, 0}};
    for (int j = 0; j < half; j++) { buckets[j].inf = 1; extra[j].inf = 1; sc->busy[j] = 0; }
    uint32_t stamp = 0;
    int last = ROUND_MAX;
    while (todo_n > 0) {
        if (todo_n < ROUND_MIN || last < ROUND_MIN) {
            /* too few additions left to pay for an inversion: Jacobian buckets for the rest */
            for (Py_ssize_t t = 0; t < todo_n; t++) {
                int32_t d = sc->dig[t];
                int bi = (d > 0 ? d : -d) - 1;
                gej_add_ge(&extra[bi], &extra[bi], &pts[sc->todo[t]], d < 0);
            }
            return;
        }
        Py_ssize_t next_n = 0;
        int count = 0;
        stamp++;
        for (Py_ssize_t t = 0; t < todo_n; t++) {
            Py_ssize_t i = sc->todo[t];
            int32_t d = sc->dig[t];
            int bi = (d > 0 ? d : -d) - 1;
            if (sc->busy[bi] == stamp || count == ROUND_MAX) {
                sc->next[next_n] = i;
                sc->dnext[next_n++] = d;
                continue;
            }
            ge *b = &buckets[bi];
            fe qy = pts[i].y;
            if (d < 0) fe_neg(&qy, &pts[i].y);
            if (b->inf) {
                b->x = pts[i].x;
                b->y = qy;
                b->inf = 0;
                continue;
            }
            if (fe_eq(&b->x, &pts[i].x)) {
                if (!fe_eq(&b->y, &qy)) { b->inf = 1; continue; }  /* P + (-P) */
                fe x2;  /* doubling: lambda = 3x^2 / 2y (y != 0 on secp256k1) */
                fe_sqr(&x2, &b->x);
                fe_mul(&sc->num[count], &x2, &THREE);
                fe_add(&sc->den[count], &b->y, &b->y);
            } else {
                fe_sub(&sc->num[count], &qy, &b->y);
                fe_sub(&sc->den[count], &pts[i].x, &b->x);
            }
            sc->bucket[count] = bi;
            sc->point[count] = &pts[i];
            sc->busy[bi] = stamp;
            count++;
        }
        settle_round(buckets, sc, count);
        last = count;
        Py_ssize_t *swap = sc->todo; sc->todo = sc->next; sc->next = swap;
        int32_t *dswap = sc->dig; sc->dig = sc->dnext; sc->dnext = dswap;
        todo_n = next_n;
    }
}

/* ---- Pippenger ---------------------------------------------------------------------- */

static uint32_t scalar_bits(const uint64_t k[4], int pos, int c) {
    if (pos >= 256) return 0;
    int limb = pos / 64, off = pos % 64;
    uint64_t v = k[limb] >> off;
    if (off + c > 64 && limb + 1 < 4) v |= k[limb + 1] << (64 - off);
    return (uint32_t)(v & ((1ULL << c) - 1));
}

static int window_bits(Py_ssize_t n) {
    int best = 2;
    double best_cost = 0;
    for (int c = 2; c <= 14; c++) {
        int windows = (257 + c - 1) / c;
        double cost = (double)windows * ((double)n + 2.0 * (double)(1 << (c - 1)));
        if (c == 2 || cost < best_cost) { best = c; best_cost = cost; }
    }
    return best;
}

/* r = sum k_i P_i; returns 0 on allocation failure. */
static int pippenger(gej *r, const ge *pts, const uint64_t (*ks)[4], Py_ssize_t n) {
    r->inf = 1;
    if (n == 0) return 1;
    int c = window_bits(n);
    int windows = (257 + c - 1) / c;
    int half = 1 << (c - 1);
    int32_t *digits = malloc(sizeof(int32_t) * (size_t)n * (size_t)windows);
    ge *buckets = malloc(sizeof(ge) * (size_t)half);
    gej *extra = malloc(sizeof(gej) * (size_t)half);
    scratch_t sc;
    sc.den = malloc(sizeof(fe) * ROUND_MAX);
    sc.num = malloc(sizeof(fe) * ROUND_MAX);
    sc.acc = malloc(sizeof(fe) * ROUND_MAX);
    sc.bucket = malloc(sizeof(int32_t) * ROUND_MAX);
    sc.point = malloc(sizeof(ge *) * ROUND_MAX);
    sc.qy = NULL;
    sc.busy = malloc(sizeof(uint32_t) * (size_t)half);
    sc.todo = malloc(sizeof(Py_ssize_t) * (size_t)n);
    sc.next = malloc(sizeof(Py_ssize_t) * (size_t)n);
    sc.dig = malloc(sizeof(int32_t) * (size_t)n);
    sc.dnext = malloc(sizeof(int32_t) * (size_t)n);
    void *owned[] = {digits, buckets, extra, sc.den, sc.num, sc.acc, sc.bucket, sc.point, sc.busy,
                     sc.todo, sc.next, sc.dig, sc.dnext};
    int ok = 1;
    for (size_t j = 0; j < sizeof owned / sizeof owned[0]; j++) ok = ok && owned[j] != NULL;
    if (!ok) goto done;
    int top = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t carry = 0;
        for (int w = 0; w < windows; w++) {
            int32_t *d = digits + (size_t)w * (size_t)n + (size_t)i;
            uint32_t v = scalar_bits(ks[i], w * c, c) + carry;
            if (v > (uint32_t)half) { *d = (int32_t)v - (1 << c); carry = 1; }
            else { *d = (int32_t)v; carry = 0; }
            if (*d && w > top) top = w;
        }
    }
    for (int w = top; w >= 0; w--) {
        if (!r->inf) {
            for (int j = 0; j < c; j++) gej_double(r, r);
        }
        Py_ssize_t todo_n = 0;
        const int32_t *col = digits + (size_t)w * (size_t)n;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (col[i] != 0 && !pts[i].inf) { sc.todo[todo_n] = i; sc.dig[todo_n++] = col[i]; }
        }
        accumulate_window(buckets, extra, half, pts, todo_n, &sc);
        gej running, total;
        running.inf = 1;
        total.inf = 1;
        for (int j = half - 1; j >= 0; j--) {
            gej_add_ge(&running, &running, &buckets[j], 0);
            if (!extra[j].inf) gej_add(&running, &running, &extra[j]);
            gej_add(&total, &total, &running);
        }
        gej_add(r, r, &total);
    }
done:
    for (size_t j = 0; j < sizeof owned / sizeof owned[0]; j++) free(owned[j]);
    return ok;
}

/* ---- Python ------------------------------------------------------------------------- */

static int run_multi_mul(PyObject *args, gej *result) {
    Py_buffer pbuf, kbuf;
    if (!PyArg_ParseTuple(args, "y*y*", &pbuf, &kbuf)) return 0;
    int ok = 0;
    ge *pts = NULL;
    uint64_t (*ks)[4] = NULL;
    if (pbuf.len % 65 != 0 || kbuf.len % 32 != 0 || pbuf.len / 65 != kbuf.len / 32) {
        PyErr_SetString(PyExc_ValueError, "need n 65-byte points and n 32-byte scalars");
        goto done;
    }
    Py_ssize_t n = pbuf.len / 65;
    pts = malloc(sizeof(ge) * (size_t)(n ? n : 1));
    ks = malloc(sizeof(*ks) * (size_t)(n ? n : 1));
    if (!pts || !ks) { PyErr_NoMemory(); goto done; }
    const unsigned char *pb = pbuf.buf, *kb = kbuf.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *why = parse_point(&pts[i], pb + 65 * i, 65, 1);
        if (why) { PyErr_Format(PyExc_ValueError, "point %zd: %s", i, why); goto done; }
        if (!parse_scalar(ks[i], kb + 32 * i)) {
            PyErr_Format(PyExc_ValueError, "scalar %zd is not below the group order", i);
            goto done;
        }
    }
    int computed;
    Py_BEGIN_ALLOW_THREADS
    computed = pippenger(result, pts, (const uint64_t (*)[4])ks, n);
    Py_END_ALLOW_THREADS
    if (!computed) { PyErr_NoMemory(); goto done; }
    ok = 1;
done:
    free(pts);
    free(ks);
    PyBuffer_Release(&pbuf);
    PyBuffer_Release(&kbuf);
    return ok;
}

static PyObject *py_multi_mul(PyObject *self, PyObject *args) {
    (void)self;
    gej r;
    if (!run_multi_mul(args, &r)) return NULL;
    unsigned char out[65];
    gej_to_bytes(out, &r);
    return PyBytes_FromStringAndSize((const char *)out, 65);
}

static PyObject *py_multi_mul_is_identity(PyObject *self, PyObject *args) {
    (void)self;
    gej r;
    if (!run_multi_mul(args, &r)) return NULL;
    return PyBool_FromLong(r.inf);
}

static PyObject *py_decode_point(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    ge p;
    const char *why = parse_point(&p, buf.buf, buf.len, 0);
    PyBuffer_Release(&buf);
    if (why) { PyErr_SetString(PyExc_ValueError, why); return NULL; }
    unsigned char out[65];
    out[0] = 4;
    fe_to_be(out + 1, &p.x);
    fe_to_be(out + 33, &p.y);
    return PyBytes_FromStringAndSize((const char *)out, 65);
}

static PyObject *py_first_invalid_point(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    Py_ssize_t bad = -1;
    if (buf.len % 65 != 0) {
        bad = 0;
    } else {
        const unsigned char *p = buf.buf;
        for (Py_ssize_t i = 0; i < buf.len / 65; i++) {
            ge point;
            if (parse_point(&point, p + 65 * i, 65, 0) != NULL) { bad = i; break; }
        }
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(bad);
}

static PyMethodDef methods[] = {
    {"decode_point", py_decode_point, METH_VARARGS,
     "decode_point(data) -> 65-byte uncompressed point; ValueError unless a valid SEC1 point"},
    {"first_invalid_point", py_first_invalid_point, METH_VARARGS,
     "first_invalid_point(data) -> index of the first 65-byte chunk that is not a valid\n"
     "non-identity uncompressed point, or -1 (0 when the length is not a multiple of 65)"},
    {"multi_mul", py_multi_mul, METH_VARARGS,
     "multi_mul(points, scalars) -> 65 bytes: sum k_i P_i (65 zero bytes: the identity)"},
    {"multi_mul_is_identity", py_multi_mul_is_identity, METH_VARARGS,
     "multi_mul_is_identity(points, scalars) -> whether sum k_i P_i is the identity"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_secp256k1",
    "Variable-time secp256k1 multi-scalar multiplication for batch verification.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__secp256k1(void) { return PyModule_Create(&module); }
