/* A till in C over the Tessera C ABI (docs/ffi.md).
 *
 * Issues a simulated card with the published TEST keys, opens a till on
 * the test keys, and runs a small day through a callback transport -- the
 * way a POS plugs in its own reader stack -- whose callback here wraps the
 * in-process simulator: a read, a purchase, a purchase during which the
 * card is pulled after it executed the earn (outcome unknown), the retry
 * at the next tap that resolves it (already done: nothing charged twice),
 * a confirmed new purchase and a redemption.
 *
 * Usage: till WORKDIR   (WORKDIR must exist and be empty)
 * Exit status 0 when every step answered what it should.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

/* The callback's context: the simulated card, and when to pull it. */
struct reader {
    TesseraTransport *sim;
    unsigned apdus;    /* command APDUs sent in this tap */
    unsigned pull_at;  /* pull the card once APDU N was executed (0: never) */
};

static int32_t transmit(void *ctx, const uint8_t *apdu, size_t apdu_len,
                        uint8_t *resp, size_t resp_cap, size_t *resp_len) {
    struct reader *r = ctx;
    r->apdus++;
    int32_t rc = tessera_transport_transmit(r->sim, apdu, apdu_len, resp, resp_cap, resp_len);
    if (rc == TESSERA_CARD_REMOVED) {
        return TESSERA_TRANSMIT_CARD_REMOVED;
    }
    if (rc != TESSERA_OK) {
        return 100 + rc; /* any other non-zero value: a reader I/O error */
    }
    if (r->pull_at != 0 && r->apdus == r->pull_at) {
        /* The card executed the command, then left the field before its
         * answer reached the till. */
        tessera_sim_set_present(r->sim, 0);
        return TESSERA_TRANSMIT_CARD_REMOVED;
    }
    return TESSERA_TRANSMIT_OK;
}

static int failures = 0;

/* Checks a call's code and that its answer contains `want`. Frees it. */
static void expect(const char *step, int32_t rc, int32_t want_rc, char *json, const char *want) {
    int ok = rc == want_rc && (want == NULL || (json != NULL && strstr(json, want) != NULL));
    printf("%-28s %s code %d (%s)\n", step, ok ? "ok  " : "FAIL", rc, tessera_code_name(rc));
    if (!ok) {
        char err[512];
        tessera_last_error(err, sizeof err);
        printf("  expected code %d and %s\n  answer: %s\n  last error: %s\n", want_rc,
               want ? want : "-", json ? json : "(none)", err);
        failures++;
    }
    tessera_string_free(json);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORKDIR\n", argv[0]);
        return 2;
    }
    char card_path[4096], till_dir[4096];
    snprintf(card_path, sizeof card_path, "%s/card.json", argv[1]);
    snprintf(till_dir, sizeof till_dir, "%s/till", argv[1]);
    printf("libtessera %s\n", tessera_version());

    char *json = NULL;
    int32_t rc = tessera_sim_issue(card_path,
        "{\"v\":1,\"card_id\":\"7E57000000000C01\",\"name\":\"Ada Lovelace\","
        "\"birth_date\":\"1990-03-14\",\"city\":\"Lyon\",\"preferences\":[\"coffee\"]}",
        &json);
    expect("issue test card", rc, TESSERA_OK, json, "\"card_id\":\"7E57000000000C01\"");

    TesseraTransport *sim = NULL;
    rc = tessera_transport_sim(card_path, &sim);
    expect("open simulator", rc, TESSERA_OK, NULL, NULL);

    struct reader reader = {sim, 0, 0};
    TesseraTransport *pos = NULL;
    rc = tessera_transport_callback(transmit, &reader, &pos);
    expect("callback transport", rc, TESSERA_OK, NULL, NULL);

    TesseraTill *till = NULL;
    rc = tessera_till_open(till_dir, NULL,
                           "{\"v\":1,\"test_keys\":true,\"terminal_id\":7,\"now\":1795780800}", &till);
    expect("open till (test keys)", rc, TESSERA_OK, NULL, NULL);
    if (till == NULL || pos == NULL || sim == NULL) {
        return 1;
    }

    /* Arguments are checked, never trusted. */
    rc = tessera_till_read(NULL, pos, &json);
    expect("null till refused", rc, TESSERA_INVALID_ARGUMENT, json, "\"kind\":\"invalid-argument\"");
    rc = tessera_till_purchase(till, pos, 1250, "{not json", 0, &json);
    expect("bad categories refused", rc, TESSERA_INVALID_ARGUMENT, json, NULL);

    reader.apdus = 0;
    rc = tessera_till_read(till, pos, &json);
    expect("read", rc, TESSERA_OK, json, "\"name\":\"Ada Lovelace\"");

    reader.apdus = 0;
    rc = tessera_till_purchase(till, pos, 1250, "[\"coffee\"]", 0, &json);
    expect("purchase 12.50 coffee", rc, TESSERA_OK, json, "\"decision\":\"approve\"");

    /* SELECT, AUTHENTICATE (profile cached), EARN: pulled after the earn. */
    reader.apdus = 0;
    reader.pull_at = 3;
    rc = tessera_till_purchase(till, pos, 4200, NULL, 0, &json);
    expect("purchase, card pulled", rc, TESSERA_INTERRUPTED, json, "\"pending\"");
    char err[1024];
    size_t n = tessera_last_error(err, sizeof err);
    printf("  last error (%zu bytes): %s\n", n, err);

    /* Tapped again: the till resolves the pending earn from the card's
     * log. It went through: nothing new is charged. */
    tessera_sim_set_present(sim, 1);
    reader.apdus = 0;
    reader.pull_at = 0;
    rc = tessera_till_purchase(till, pos, 4200, NULL, 0, &json);
    expect("retry resolves: done", rc, TESSERA_ALREADY_DONE, json, "\"result\":\"completed\"");

    /* The customer really wants another one: the clerk confirms. */
    reader.apdus = 0;
    rc = tessera_till_purchase(till, pos, 4200, NULL, TESSERA_FLAG_ALLOW_REPEAT, &json);
    expect("confirmed new purchase", rc, TESSERA_OK, json, "\"decision\":\"approve\"");

    reader.apdus = 0;
    rc = tessera_till_redeem(till, pos, 5, 0, &json);
    expect("redeem 5", rc, TESSERA_OK, json, "\"type\":\"redeem\"");

    rc = tessera_sim_state(sim, &json);
    expect("card state", rc, TESSERA_OK, json, "\"counter\":4");

    tessera_till_close(till);
    tessera_transport_free(pos);
    tessera_transport_free(sim);
    printf("%d passed, %d failed\n", failures == 0 ? 1 : 0, failures == 0 ? 0 : 1);
    return failures == 0 ? 0 : 1;
}
