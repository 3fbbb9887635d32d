"""One authorization lifecycle driven by Python grpcio, a gRPC stack that is not tonic.

Run by tests/it/interop.rs against a real server, with stubs it generated from proto/ by
grpc_tools.protoc; this script generates nothing. It checks what a front-end team in another
language relies on: mutual TLS with the PKI's PEM files, the streams (Watch, Attend), a Decide
retried after it took effect (answered with `replayed`), and the google.rpc.ErrorInfo and
BadRequest details of refused calls, decoded with grpcio-status as docs/errors.md says.

Usage: lifecycle.py --target 127.0.0.1:PORT --pki DIR --stubs DIR
Prints each check; exits 1 with the reason on the first failure.
"""

import argparse
import os
import sys
import traceback
from pathlib import Path

# Every call has a deadline, so a server that does not answer fails the run instead of hanging it.
DEADLINE_S = 20


class Failure(Exception):
    pass


def check(ok, what):
    if not ok:
        raise Failure(what)
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="the server's host:port")
    ap.add_argument("--pki", required=True, type=Path, help="a directory written by `pki init`")
    ap.add_argument("--stubs", required=True, help="where grpc_tools.protoc wrote the stubs")
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    try:
        run(args.target, args.pki)
    except Failure as e:
        sys.exit(f"FAIL: {e}")
    except Exception as e:  # an unexpected RpcError, or a bug here: the traceback says where
        traceback.print_exc()
        sys.exit(f"FAIL: {type(e).__name__}: {e}")
    print("all checks passed")


def run(target, pki):
    import grpc
    from countersign.v1 import supervisor_pb2 as sv
    from countersign.v1 import supervisor_pb2_grpc as sv_grpc
    from countersign.v1 import teller_pb2 as tl
    from countersign.v1 import teller_pb2_grpc as tl_grpc
    from countersign.v1 import types_pb2 as ty

    def channel(principal):
        # The principal is whoever the client certificate says; the server's certificate is
        # checked against the PKI's CA and its SAN (it names 127.0.0.1 and localhost).
        creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / f"{principal}.key").read_bytes(),
            certificate_chain=(pki / f"{principal}.pem").read_bytes(),
        )
        # Loopback only: never through a proxy the environment may name.
        return grpc.secure_channel(target, creds, options=[("grpc.enable_http_proxy", 0)])

    teller = tl_grpc.TellerServiceStub(channel("teller-01"))
    sup = sv_grpc.SupervisorServiceStub(channel("sup-01"))

    def submission(serial, account):
        # JPEG magic bytes: the server sniffs each image's format; the rest is random so the
        # content-addressed image store sees a new image.
        jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(8192)
        return tl.SubmitRequest(
            teller_serial=serial,
            transaction=ty.Transaction(
                code="WDL-CASH",
                amount=ty.Money(minor_units=5_000_000, currency="CNY"),
                account=account,
            ),
            customer=ty.CustomerIdentity(
                document_type=ty.DOCUMENT_TYPE_PRC_RESIDENT_ID,
                document_number="11010519491231002X",
                name="Zhao Min",
                expiry_date="2036-05-01",
                verification=ty.ID_VERIFICATION_MATCHED,
            ),
            images=[
                ty.ImageUpload(kind=ty.IMAGE_KIND_VOUCHER, media_type="image/jpeg", content=jpeg)
            ],
            note="submitted by the Python interop client",
        )

    # A refused Submit: INVALID_ARGUMENT, ErrorInfo INVALID_FIELD and a BadRequest, both
    # naming the field as the contract spells it.
    try:
        teller.Submit(submission("PY-0000", "62220202ABCD1234"), timeout=DEADLINE_S)
        raise Failure("a Submit with letters in the account was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
              f"bad account: INVALID_ARGUMENT (got {e.code()}: {e.details()})")
        info, details = refusal(e, "INVALID_FIELD")
        check(info.metadata.get("field") == "transaction.account",
              f"ErrorInfo metadata field = {info.metadata.get('field')!r}")
        bad = unpack(details, "BadRequest")
        check([v.field for v in bad.field_violations] == ["transaction.account"],
              f"BadRequest names {[v.field for v in bad.field_violations]}")

    r = teller.Submit(submission("PY-0001", "6222020200112233445"), timeout=DEADLINE_S)
    check(not r.replayed and r.request.state == ty.REQUEST_STATE_QUEUED,
          f"Submit: {r.request.request_id} QUEUED (nobody attends yet)")
    rid = r.request.request_id

    # grpcio starts a stream without waiting for the server: read the first state before a
    # supervisor attends, so the Watch is known to be open and misses no change.
    watch = teller.Watch(tl.WatchRequest(request_id=rid), timeout=DEADLINE_S)
    states = [next(watch).request.state]

    # Attend is a server stream; keeping it open is the supervisor's presence.
    attend = sup.Attend(sv.AttendRequest(), timeout=DEADLINE_S)
    event = next(attend)
    check(event.WhichOneof("event") == "offer" and event.offer.request_id == rid,
          f"Attend: offer of {rid} (got {event.WhichOneof('event')} of {event.offer.request_id})")
    epoch = event.offer.epoch

    a = sup.Accept(sv.AcceptRequest(request_id=rid, epoch=epoch), timeout=DEADLINE_S)
    check(a.request.state == ty.REQUEST_STATE_IN_REVIEW and not a.replayed, "Accept: IN_REVIEW")

    # An action with an epoch other than the offer's: FAILED_PRECONDITION STALE_EPOCH, with
    # both epochs in the metadata. Epoch 0 is older than any offer's.
    try:
        sup.Decide(sv.DecideRequest(request_id=rid, epoch=epoch - 1,
                                    decision=ty.DECISION_APPROVE), timeout=DEADLINE_S)
        raise Failure("a Decide with an older epoch was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION,
              f"older epoch: FAILED_PRECONDITION (got {e.code()}: {e.details()})")
        info, details = refusal(e, "STALE_EPOCH")
        check(dict(info.metadata) == {"presented_epoch": str(epoch - 1),
                                      "current_epoch": str(epoch)},
              f"ErrorInfo metadata {dict(info.metadata)}")
        unpack(details, "PreconditionFailure")

    decide = sv.DecideRequest(request_id=rid, epoch=epoch, decision=ty.DECISION_APPROVE,
                              comment="signature matches")
    d = sup.Decide(decide, timeout=DEADLINE_S)
    check(d.request.state == ty.REQUEST_STATE_APPROVED and not d.replayed,
          "Decide APPROVE: APPROVED, replayed False")
    # The same Decide again, as a client does when the answer was lost: the same answer,
    # marked as a replay, and nothing recorded twice.
    d2 = sup.Decide(decide, timeout=DEADLINE_S)
    check(d2.request.state == ty.REQUEST_STATE_APPROVED and d2.replayed,
          "the same Decide again: OK, APPROVED, replayed True")
    check(d2.request.version == d.request.version,
          f"the replay changed nothing (version {d.request.version})")

    # The Watch saw every state and ended after the final one.
    states += [w.request.state for w in watch]
    names = [ty.RequestState.Name(s) for s in states]
    check(names == ["REQUEST_STATE_QUEUED", "REQUEST_STATE_OFFERED",
                    "REQUEST_STATE_IN_REVIEW", "REQUEST_STATE_APPROVED"],
          f"Watch: {' -> '.join(names)}, then the stream ended")
    attend.cancel()


def refusal(err, reason):
    """The ErrorInfo of a refused call, checked to carry `reason` in domain countersign.v1,
    and all the status details."""
    from countersign.v1 import types_pb2 as ty
    from grpc_status import rpc_status

    # from_call also checks that the details' code and message agree with grpc-status and
    # grpc-message, so a server that filled them in differently fails here.
    status = rpc_status.from_call(err)
    check(status is not None, f"{reason}: the status carries grpc-status-details-bin")
    info = unpack(status.details, "ErrorInfo")
    check(info.domain == "countersign.v1" and info.reason == reason,
          f"ErrorInfo domain {info.domain!r} reason {info.reason!r}")
    # The reason is a value of the contract's ErrorReason, as types.proto says.
    check(f"ERROR_REASON_{reason}" in ty.ErrorReason.keys(), f"{reason} is in ErrorReason")
    return info, status.details


def unpack(details, name):
    """The one detail of type google.rpc.NAME among `details`."""
    from google.rpc import error_details_pb2

    cls = getattr(error_details_pb2, name)
    found = [d for d in details if d.Is(cls.DESCRIPTOR)]
    check(len(found) == 1, f"one google.rpc.{name} among {[d.type_url for d in details]}")
    msg = cls()
    found[0].Unpack(msg)
    return msg


if __name__ == "__main__":
    main()
