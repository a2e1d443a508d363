#!/usr/bin/env python3
"""Smoke test of the Tessera C ABI from Python (ctypes), the same flow as
examples/c/till.c: issue a test card, open a till on the test keys, read,
earn, pull the card during an earn through a Python transmit callback that
wraps the simulator, and resolve it at the next tap.

Usage: smoke.py PATH/TO/libtessera_ffi.so WORKDIR
"""
import ctypes as C
import json
import os
import sys

lib = C.CDLL(sys.argv[1])
work = sys.argv[2]

# Result codes (include/tessera.h).
OK, INVALID_ARGUMENT, ALREADY_DONE, CARD_REMOVED, INTERRUPTED = 0, 2, 7, 8, 9
TRANSMIT_OK, TRANSMIT_CARD_REMOVED = 0, 1
ALLOW_REPEAT = 1

P = C.c_void_p
TRANSMIT = C.CFUNCTYPE(C.c_int32, P, P, C.c_size_t, P, C.c_size_t, C.POINTER(C.c_size_t))
for name, args in {
    "tessera_sim_issue": [C.c_char_p, C.c_char_p, C.POINTER(P)],
    "tessera_transport_sim": [C.c_char_p, C.POINTER(P)],
    "tessera_transport_callback": [TRANSMIT, P, C.POINTER(P)],
    "tessera_transport_transmit": [P, P, C.c_size_t, P, C.c_size_t, C.POINTER(C.c_size_t)],
    "tessera_sim_set_present": [P, C.c_int32],
    "tessera_till_open": [C.c_char_p, C.c_char_p, C.c_char_p, C.POINTER(P)],
    "tessera_till_read": [P, P, C.POINTER(P)],
    "tessera_till_purchase": [P, P, C.c_uint64, C.c_char_p, C.c_uint32, C.POINTER(P)],
    "tessera_till_redeem": [P, P, C.c_uint32, C.c_uint32, C.POINTER(P)],
    "tessera_last_error": [C.c_char_p, C.c_size_t],
}.items():
    getattr(lib, name).argtypes = args
    getattr(lib, name).restype = C.c_int32
lib.tessera_last_error.restype = C.c_size_t
lib.tessera_string_free.argtypes = [P]
lib.tessera_string_free.restype = None
lib.tessera_till_close.argtypes = [P]
lib.tessera_till_close.restype = None
lib.tessera_transport_free.argtypes = [P]
lib.tessera_transport_free.restype = None


def call(fn, *args):
    """Calls an operation with an out_json, returns (code, parsed answer)."""
    out = P()
    rc = fn(*args, C.byref(out))
    doc = None
    if out.value:
        doc = json.loads(C.string_at(out.value).decode("utf-8"))
        lib.tessera_string_free(out)
    return rc, doc


def check(step, cond, detail=""):
    print(f"{step:<28} {'ok' if cond else 'FAIL'} {detail}")
    if not cond:
        buf = C.create_string_buffer(2048)
        lib.tessera_last_error(buf, len(buf))
        print("  last error:", buf.value.decode())
        sys.exit(1)


card = os.path.join(work, "card.json").encode()
rc, doc = call(lib.tessera_sim_issue, card,
               json.dumps({"v": 1, "card_id": "7E57000000000B01", "name": "Grace Hopper",
                           "birth_date": "1986-12-09", "preferences": ["coffee"]}).encode())
check("issue test card", rc == OK and doc["card_id"] == "7E57000000000B01")

sim = P()
check("open simulator", lib.tessera_transport_sim(card, C.byref(sim)) == OK)

state = {"apdus": 0, "pull_at": 0}


@TRANSMIT
def transmit(ctx, apdu, apdu_len, resp, resp_cap, resp_len):
    state["apdus"] += 1
    rc = lib.tessera_transport_transmit(sim, apdu, apdu_len, resp, resp_cap, resp_len)
    if rc == CARD_REMOVED:
        return TRANSMIT_CARD_REMOVED
    if rc != OK:
        return 100 + rc
    if state["pull_at"] and state["apdus"] == state["pull_at"]:
        lib.tessera_sim_set_present(sim, 0)
        return TRANSMIT_CARD_REMOVED
    return TRANSMIT_OK


pos = P()
check("callback transport", lib.tessera_transport_callback(transmit, None, C.byref(pos)) == OK)
till = P()
rc = lib.tessera_till_open(os.path.join(work, "till").encode(), None,
                           b'{"v":1,"test_keys":true,"terminal_id":9,"now":1795780800}', C.byref(till))
check("open till (test keys)", rc == OK)

rc, doc = call(lib.tessera_till_read, None, pos)
check("null till refused", rc == INVALID_ARGUMENT and doc["kind"] == "invalid-argument")

rc, doc = call(lib.tessera_till_read, till, pos)
check("read", rc == OK and doc["v"] == 1 and doc["card"]["profile"]["name"] == "Grace Hopper")

rc, doc = call(lib.tessera_till_purchase, till, pos, 1250, b'["coffee"]', 0)
check("purchase 12.50 coffee", rc == OK and doc["outcome"]["decision"] == "approve",
      f"+{doc['outcome']['receipt']['record']['points']} points")
balance = doc["card"]["balance"]

state.update(apdus=0, pull_at=3)
rc, doc = call(lib.tessera_till_purchase, till, pos, 4200, None, 0)
check("purchase, card pulled", rc == INTERRUPTED and doc["pending"]["type"] == "earn")

lib.tessera_sim_set_present(sim, 1)
state.update(apdus=0, pull_at=0)
rc, doc = call(lib.tessera_till_purchase, till, pos, 4200, None, 0)
check("retry resolves: done", rc == ALREADY_DONE and doc["resolved"][0]["result"] == "completed")

rc, doc = call(lib.tessera_till_purchase, till, pos, 4200, None, ALLOW_REPEAT)
check("confirmed new purchase", rc == OK and doc["outcome"]["decision"] == "approve")

rc, doc = call(lib.tessera_till_redeem, till, pos, 5, 0)
check("redeem 5", rc == OK and doc["outcome"]["receipt"]["record"]["type"] == "redeem")

lib.tessera_till_close(till)
lib.tessera_transport_free(pos)
lib.tessera_transport_free(sim)
print("1 passed, 0 failed")
