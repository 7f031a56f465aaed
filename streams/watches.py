"""A listing partition's watch of one certificate: the view all its listings that claim the
certificate share. Pure, like the two sides of the join.

A partition subscribes to a certificate once, when its first listing claims it, and holds the
answer here; a later listing claiming the same certificate is decided at once from the watch,
with no round trip to the certificate side. Re-checks update the watch and then every claimer.
When the partition's last claimer lets go, the watch closes (and unsubscribes).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def on_answer(watch: CertWatch, token: str, view: CertView | None) -> bool:
    """Take the answer if it is to this watch's subscription; False if it is stale. A view
    already newer (a re-check that came first) is kept."""
    if token != watch.token:
        return False
    if not watch.answered or _newer(view, watch.view):
        watch.view = view
    watch.answered = True
    return True


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
