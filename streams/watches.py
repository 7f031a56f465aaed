"""A listing partition's watch of one certificate: the view all its listings that claim the
certificate share. Pure, like the two sides of the join.

A partition subscribes to a certificate once, when its first listing claims it, and holds the
answer here; a later listing claiming the same certificate is decided at once from the watch,
with no round trip to the certificate side. Re-checks update the watch and then every claimer.
When the partition's last claimer lets go, the watch closes (and unsubscribes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from streams.model import CertTrigger, CertView, VerdictTrigger


@dataclass(slots=True)
class CertWatch:
    # Names this watch's subscription: the digest of the listing event that opened it (so a
    # replay of that event opens it again with the same token). Only its answer is taken.
    token: str
    answered: bool = False
    view: CertView | None = None  # None: answered "not found" (or not answered yet)
    # The certificate side's expiry re-check of the current validity, once received: a listing
    # that claims the certificate later gets it too (an event stamped before the expiry must
    # not stay live on an expired certificate).
    expiry: CertTrigger | None = None
    # Where in the partition's updates the latest answer taken was read: an answer read there
    # or before again is a replay, one read later a repeat (``on_answer``).
    answered_offset: int = -1


class Answered(Enum):
    STALE = "stale"  # to another subscription of this partition: ignored
    FIRST = "first"  # the first answer to this watch's subscription: decides its claimers
    # That answer, or one before it, read again after a crash: the claimers' verdicts it
    # decided are said again (they may have died with the crash).
    REPLAY = "replay"
    # A later answer to the same subscription (a re-ask's): only claimers still awaiting the
    # certificate are decided; the others' verdicts are not said again, or every re-ask would
    # repeat the verdicts of every claimer of the partition.
    REPEAT = "repeat"


def on_answer(watch: CertWatch, token: str, view: CertView | None, offset: int) -> Answered:
    """An answer read at ``offset`` of the listing partition's updates. A view already newer (a
    re-check that came first) is kept."""
    if token != watch.token:
        return Answered.STALE
    if not watch.answered:
        watch.view, watch.answered, watch.answered_offset = view, True, offset
        return Answered.FIRST
    if _newer(view, watch.view):
        watch.view = view
    if offset <= watch.answered_offset:
        return Answered.REPLAY
    # What a repeat decides is said again if it is read again after a crash: a replay too.
    watch.answered_offset = offset
    return Answered.REPEAT


def on_trigger(watch: CertWatch, trigger: CertTrigger) -> None:
    """A re-check reached this partition: its view, unless older than the watch's."""
    if watch.view is None or _newer(trigger.view, watch.view) or trigger.view == watch.view:
        watch.view = trigger.view
    if trigger.trigger is VerdictTrigger.CERTIFICATE_EXPIRY:
        watch.expiry = trigger


def late_expiry(watch: CertWatch) -> CertTrigger | None:
    """The expiry re-check a new claimer must also get, if the certificate's current validity
    has already expired here."""
    expiry, view = watch.expiry, watch.view
    if expiry is None or view is None or expiry.view.expires_on != view.expires_on:
        return None
    return expiry


def _newer(view: CertView | None, held: CertView | None) -> bool:
    return view is not None and (held is None or view.version > held.version)
