/*
 * Embeds texts with a model folder through shrink's C API, prints each embedding and the cosine similarity of the
 * first text to each other one, classifies the texts when the model has labels, and shows the error path.
 *
 *   cargo build --release -p shrink-capi
 *   cc -std=c99 -Iinclude examples/c/embed.c target/release/libshrink.a -lpthread -ldl -lm -o embed
 *   ./embed assets/models/all-MiniLM-L6-v2 "A man is playing a guitar." "Someone plays an instrument."
 *
 * Output, one record per line: "dim D", "embedding I V1 .. VD", "cosine 0 I C", then either "probs I P1 .. PL" and
 * "label I NAME" per text or "no head: code C: MESSAGE", and "missing folder: code C: MESSAGE".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "shrink.h"

static const char *const DEFAULT_TEXTS[] = {"A man is playing a guitar.", "Someone is playing an instrument."};

static int fail(const char *call) {
    fprintf(stderr, "%s: code %d: %s\n", call, (int)shrink_last_error_code(), shrink_last_error_message());
    return 1;
}

static double cosine(const float *a, const float *b, size_t dim) {
    double dot = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return dot / (sqrt(aa) * sqrt(bb));
}

/* Prints each text's label probabilities and most likely label. */
static int classify(shrink_model *model, const char *const *texts, size_t n) {
    size_t labels = shrink_num_labels(model);
    float *probs = malloc(n * labels * sizeof *probs);
    int32_t *best = malloc(n * sizeof *best);
    int rc = 0;
    if (!probs || !best) {
        fprintf(stderr, "out of memory\n");
        rc = 1;
    } else if (shrink_classify(model, texts, n, probs, n * labels, best) != SHRINK_STATUS_OK) {
        rc = fail("shrink_classify");
    } else {
        for (size_t i = 0; i < n; i++) {
            printf("probs %zu", i);
            for (size_t j = 0; j < labels; j++) printf(" %.9g", probs[i * labels + j]);
            printf("\nlabel %zu %s\n", i, shrink_label_name(model, (size_t)best[i]));
        }
    }
    free(probs);
    free(best);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [TEXT...]\n", argv[0]);
        return 2;
    }
    const char *const *texts = argc > 2 ? (const char *const *)(argv + 2) : DEFAULT_TEXTS;
    size_t n = argc > 2 ? (size_t)(argc - 2) : 2;
    printf("shrink %s\n", shrink_version());

    shrink_model *model = shrink_load(argv[1], 2);
    if (!model) return fail("shrink_load");
    size_t dim = shrink_embedding_dim(model);
    float *emb = malloc(n * dim * sizeof *emb);
    if (!emb) {
        shrink_free(model);
        return 1;
    }
    if (shrink_embed(model, texts, n, emb, n * dim) != SHRINK_STATUS_OK) {
        int rc = fail("shrink_embed");
        free(emb);
        shrink_free(model);
        return rc;
    }
    printf("dim %zu\n", dim);
    for (size_t i = 0; i < n; i++) {
        printf("embedding %zu", i);
        for (size_t j = 0; j < dim; j++) printf(" %.9g", emb[i * dim + j]);
        printf("\n");
    }
    for (size_t i = 1; i < n; i++) printf("cosine 0 %zu %.6f\n", i, cosine(emb, emb + i * dim, dim));
    free(emb);

    int rc = 0;
    if (shrink_num_labels(model) > 0) {
        rc = classify(model, texts, n);
    } else {
        /* A model without a classification head: classify says so with a code of its own. */
        int32_t code = shrink_classify(model, texts, n, NULL, 0, NULL);
        printf("no head: code %d: %s\n", (int)code, shrink_last_error_message());
    }
    shrink_free(model);

    /* The error path: a folder that does not exist gives NULL, a non-zero code and a message naming it. */
    shrink_model *missing = shrink_load("no/such/model", 0);
    printf("missing folder: code %d: %s\n", (int)shrink_last_error_code(), shrink_last_error_message());
    if (missing) {
        shrink_free(missing);
        return 1;
    }
    return rc;
}
