"""Payments in Telegram Stars as the Bot API describes them: invoices, pre-checkout, payment, refund.

A Stars invoice is in currency XTR with no provider token and exactly one price. When a user pays, Telegram
first sends the bot a pre_checkout_query and waits up to ten seconds for answerPreCheckoutQuery; only an
``ok`` answer lets the payment through, which then arrives as a message carrying ``successful_payment`` with
a ``telegram_payment_charge_id`` the bot can pass to refundStarPayment.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from tests.fakes.telegram.models import JSON
from tests.fakes.telegram.protocol import Params, bad

STARS = "XTR"
PRECHECKOUT_WINDOW_S = 10.0  # Telegram cancels the payment unless the bot answers within this
TITLE_LIMIT = 32
DESCRIPTION_LIMIT = 255
PAYLOAD_LIMIT = 128  # bytes
QUERY_GONE = "query is too old and response timeout expired or query ID is invalid"


@dataclass(frozen=True)
class Invoice:
    """An invoice as the bot sent it."""

    chat_id: int
    message_id: int
    title: str
    description: str
    payload: str
    currency: str
    total_amount: int


@dataclass
class PreCheckoutAnswer:
    ok: bool
    error_message: str | None
    after_s: float  # how long after the query was sent the bot answered


@dataclass
class Charge:
    """A completed payment."""

    charge_id: str
    user_id: int
    currency: str
    total_amount: int
    payload: str
    refunded: bool = False


@dataclass(frozen=True)
class Checkout:
    """How a user's attempt to pay ended: "paid", "declined" (with the bot's reason) or "timeout"."""

    status: str
    query_id: str
    charge: Charge | None = None
    error_message: str | None = None
    update: JSON | None = None  # the successful_payment update, to deliver again


@dataclass
class Payments:
    """What the fake knows about the bot's invoices and its users' payments."""

    window_s: float = PRECHECKOUT_WINDOW_S
    invoices: list[Invoice] = field(default_factory=list)
    answers: dict[str, PreCheckoutAnswer] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: list[str] = field(default_factory=list)
    open_queries: dict[str, tuple[JSON, float]] = field(default_factory=dict)  # id -> (query, sent at)

    def check_invoice(self, p: Params) -> tuple[str, str, str, str, int]:
        """(title, description, payload, currency, total) of a sendInvoice, refused as Telegram refuses it."""
        title, description = p.text("title") or "", p.text("description") or ""
        payload, currency = p.text("payload") or "", p.text("currency") or ""
        if not 1 <= len(title) <= TITLE_LIMIT:
            raise bad("TITLE_INVALID" if title else "title is empty")
        if not 1 <= len(description) <= DESCRIPTION_LIMIT:
            raise bad("DESCRIPTION_INVALID" if description else "description is empty")
        if not 1 <= len(payload.encode()) <= PAYLOAD_LIMIT:
            raise bad("INVOICE_PAYLOAD_INVALID")
        if not currency:
            raise bad("currency is empty")
        prices = p.obj("prices")
        if not isinstance(prices, list) or not prices:
            raise bad("can't parse prices JSON object")
        for price in prices:
            if not isinstance(price, dict) or not price.get("label") or not isinstance(price.get("amount"), int):
                raise bad("can't parse prices JSON object")
        if currency == STARS:
            # Stars: no payment provider, one price, whole Stars, no tips.
            if p.text("provider_token"):
                raise bad("PAYMENT_PROVIDER_INVALID")
            if len(prices) != 1 or p.integer("max_tip_amount"):
                raise bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        elif not p.text("provider_token"):
            raise bad("PAYMENT_PROVIDER_INVALID")
        total = sum(int(price["amount"]) for price in prices)
        if total <= 0:
            raise bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        return title, description, payload, currency, total

    def new_query(self, user: JSON, invoice: Invoice, now: float) -> JSON:
        query: JSON = {
            "id": str(secrets.randbits(62)),
            "from": user,
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "invoice_payload": invoice.payload,
        }
        self.open_queries[query["id"]] = (query, now)
        return query

    def answer(self, p: Params, now: float) -> bool:
        query_id = p.text("pre_checkout_query_id") or ""
        opened = self.open_queries.pop(query_id, None)
        if opened is None or now - opened[1] > self.window_s:
            raise bad(QUERY_GONE)
        ok = p.flag("ok")
        error = p.text("error_message")
        if not ok and not error:
            raise bad("error_message is required when ok is false")  # shown to the user: a reason is mandatory
        self.answers[query_id] = PreCheckoutAnswer(ok, error if not ok else None, now - opened[1])
        return True

    def charge(self, user_id: int, invoice: Invoice) -> Charge:
        charge = Charge(
            "stxC" + secrets.token_urlsafe(36), user_id, invoice.currency, invoice.total_amount, invoice.payload
        )
        self.charges[charge.charge_id] = charge
        return charge

    def refund(self, p: Params) -> Charge:
        user_id = p.integer("user_id", required=True)
        charge = self.charges.get(p.text("telegram_payment_charge_id") or "")
        if charge is None or charge.user_id != user_id:
            raise bad("CHARGE_NOT_FOUND")
        if charge.refunded:
            raise bad("CHARGE_ALREADY_REFUNDED")
        charge.refunded = True
        self.refunds.append(charge.charge_id)
        return charge


def payment_fields(charge: Charge) -> JSON:
    """The SuccessfulPayment (and RefundedPayment) object of a charge: Stars have no provider charge id."""
    return {
        "currency": charge.currency,
        "total_amount": charge.total_amount,
        "invoice_payload": charge.payload,
        "telegram_payment_charge_id": charge.charge_id,
        "provider_payment_charge_id": "",
    }
