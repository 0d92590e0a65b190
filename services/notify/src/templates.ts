// Every message notify sends. Each body is built from blocks of plain text: the HTML body
// escapes all of it (static words and event values alike), and values from users or events are
// cleaned of control and formatting characters first, so a display name or device string cannot
// add markup, lines or reordered text to either body. A code appears only in the body, never
// in a subject (subjects are stored in the inbox and shown in mail lists).
import type { Email } from "./mailer.ts";

/** What a one-time code is for. */
export type CodePurpose = "verify_email" | "sign_in" | "reset_password" | "enable_mfa" | "step_up" | "other";

/** A second factor, as emails name it. */
export type MfaKind = "email" | "totp" | "recovery_code" | "other";

/** An email and the inbox kind it is recorded under. */
export type Notice = Email & { kind: string };

/** Plain text, a one-time code shown large, or lines kept together in one paragraph. */
type Block = string | { code: string } | { lines: string[] };

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for an HTML body. */
export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);

/**
 * A user- or event-supplied value fit for one line of either body: control and invisible
 * formatting characters (bidi overrides, zero-width) become spaces, runs of space collapse, and
 * it is cut to `max` characters.
 */
export function clean(value: string, max = 100): string {
  const flat = value
    .replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, " ")
    .replace(/\s+/g, " ")
    .trim();
  const chars = [...flat];
  return chars.length > max ? `${chars.slice(0, max - 1).join("")}…` : flat;
}

/** "2025-05-01 12:34 UTC": unambiguous wherever the reader is. */
const when = (at: Date) => `${at.toISOString().slice(0, 16).replace("T", " ")} UTC`;

const textOf = (b: Block) => (typeof b === "string" ? b : "code" in b ? b.code : b.lines.join("\n"));

function htmlOf(b: Block): string {
  if (typeof b === "string") return `<p>${escapeHtml(b)}</p>`;
  if ("code" in b) {
    return `<p style="font-size:28px;font-weight:bold;letter-spacing:6px">${escapeHtml(b.code)}</p>`;
  }
  return `<p>${b.lines.map(escapeHtml).join("<br>\n")}</p>`;
}

function compose(id: string, to: string, kind: string, subject: string, blocks: Block[]): Notice {
  const text = blocks.map(textOf).join("\n\n");
  return { id, to, kind, subject, text: `${text}\n`, html: blocks.map(htmlOf).join("\n") };
}

const CODES: Record<CodePurpose, { kind: string; subject: string; what: string; unasked: string }> = {
  verify_email: {
    kind: "verification_code",
    subject: "Confirm your email address",
    what: "confirm your email address",
    unasked:
      "If you did not create a Protomesh account, ignore this email: without the code nothing happens.",
  },
  sign_in: {
    kind: "sign_in_code",
    subject: "Your sign-in code",
    what: "finish signing in",
    unasked: "If you are not signing in right now, someone knows your password: change it now.",
  },
  reset_password: {
    kind: "reset_code",
    subject: "Reset your password",
    what: "set a new password",
    unasked: "If you did not ask to reset your password, ignore this email: your password stays as it is.",
  },
  enable_mfa: {
    kind: "enable_mfa_code",
    subject: "Turn on two-step sign-in",
    what: "turn on two-step sign-in",
    unasked: "If you did not ask for this, someone is signed in to your account: change your password now.",
  },
  step_up: {
    kind: "confirmation_code",
    subject: "Confirm it's you",
    what: "confirm the change you asked for",
    unasked: "If you did not ask for this, someone is signed in to your account: change your password now.",
  },
  other: {
    kind: "code",
    subject: "Your Protomesh code",
    what: "continue",
    unasked: "If you did not ask for a code, ignore this message.",
  },
};

/** A one-time code as it reaches the person. */
export interface CodeMessage {
  purpose: CodePurpose;
  code: string;
  /** Whole minutes the code lives, at least 1. */
  minutes: number;
}

/** The email carrying a one-time code; the code is in the body only. */
export function codeEmail(to: string, m: CodeMessage, id: string): Notice {
  const c = CODES[m.purpose];
  return compose(id, to, c.kind, c.subject, [
    `Your code to ${c.what}:`,
    { code: clean(m.code, 12) },
    `It expires in ${m.minutes} minute${m.minutes === 1 ? "" : "s"}. Never share it: Protomesh never asks you for it.`,
    c.unasked,
  ]);
}

/** The text message carrying a one-time code, and the subject its inbox row shows (no code). */
export function codeSms(m: CodeMessage): { kind: string; subject: string; text: string } {
  const c = CODES[m.purpose];
  return {
    kind: c.kind,
    subject: c.subject,
    text: `Protomesh: ${clean(m.code, 12)} is your code to ${c.what}. It expires in ${m.minutes} min. Never share it.`,
  };
}

/** The welcome email, once the address is verified. */
export function welcomeEmail(to: { email: string; displayName: string }, id: string): Notice {
  const name = clean(to.displayName) || "there";
  return compose(id, to.email, "welcome", "Welcome to Protomesh", [
    `Hi ${name},`,
    `your email address is confirmed and your Protomesh account is ready. Sign in any time with ${clean(to.email, 254)}.`,
  ]);
}

/**
 * To someone offline who got a chat message: who wrote, not what (the text stays in the app).
 * One per conversation per quiet period, however many messages came.
 */
export function chatMessageEmail(
  to: { email: string; displayName: string },
  from: string,
  id: string,
): Notice {
  const name = clean(to.displayName) || "there";
  const sender = clean(from) || "Someone";
  return compose(id, to.email, "chat_message", `New message from ${sender}`, [
    `Hi ${name},`,
    `${sender} sent you a message on Protomesh. Open the app to read and reply.`,
  ]);
}

/** To the owner of an address someone tried to sign up with again. */
export function signUpAttemptedEmail(to: { email: string; at: Date }, id: string): Notice {
  return compose(id, to.email, "signup_attempt", "Someone tried to sign up with your email", [
    `At ${when(to.at)} someone tried to create a Protomesh account with ${clean(to.email, 254)}, which already has one.`,
    `If it was you and you forgot your password, use "Forgot password" on the sign-in page to reset it.`,
    "If it was not you, ignore this email: nothing in your account changed.",
  ]);
}

/** The alert for a sign-in from a device or address the account had not used before. */
export function newDeviceEmail(
  to: { email: string; device: string; ip: string; at: Date },
  id: string,
): Notice {
  return compose(id, to.email, "new_device_sign_in", "New sign-in to your Protomesh account", [
    "Your account was signed in from a device or address it had not used before:",
    `Device: ${clean(to.device) || "unknown"}`,
    `Address: ${clean(to.ip, 64) || "unknown"}`,
    `Time: ${when(to.at)}`,
    "If this was you, there is nothing to do. If not, change your password now and sign out your other sessions.",
  ]);
}

/** After ChangePassword (`reset` false) or ResetPassword (`reset` true). */
export function passwordChangedEmail(to: { email: string; reset: boolean; at: Date }, id: string): Notice {
  return to.reset
    ? compose(id, to.email, "password_reset", "Your password was reset", [
        `The password of your Protomesh account was reset at ${when(to.at)} with a code sent to this address. Every session was signed out.`,
        "If you did not do this, reset your password again now: someone can read your email.",
      ])
    : compose(id, to.email, "password_changed", "Your password was changed", [
        `The password of your Protomesh account was changed at ${when(to.at)}. Your other sessions were signed out.`,
        `If you did not do this, use "Forgot password" on the sign-in page now to take your account back.`,
      ]);
}

const MFA_NAMES: Record<MfaKind, string> = {
  email: "codes sent to this address",
  totp: "an authenticator app",
  recovery_code: "recovery codes",
  other: "a second factor",
};

/** After a second factor was turned on or off. */
export function mfaChangedEmail(
  to: { email: string; method: MfaKind; enabled: boolean; at: Date },
  id: string,
): Notice {
  const how = MFA_NAMES[to.method];
  return to.enabled
    ? compose(id, to.email, "mfa_enabled", "Two-step sign-in turned on", [
        `Two-step sign-in with ${how} was turned on for your Protomesh account at ${when(to.at)}.`,
        "If you did not do this, change your password now.",
      ])
    : compose(id, to.email, "mfa_disabled", "Two-step sign-in turned off", [
        `Two-step sign-in with ${how} was turned off for your Protomesh account at ${when(to.at)}. Signing in now needs only your password.`,
        "If you did not do this, change your password now and turn two-step sign-in back on.",
      ]);
}

/** The confirmation that an account and its data are gone (sent to the address the event carries). */
export function accountDeletedEmail(to: { email: string; at: Date }, id: string): Notice {
  return compose(id, to.email, "account_deleted", "Your Protomesh account was deleted", [
    `Your Protomesh account (${clean(to.email, 254)}) and its data were deleted at ${when(to.at)}. This is the last email we send you.`,
    "If you did not do this, someone had your password: contact support.",
  ]);
}

/** An amount in integer minor units (cents for EUR) of an ISO 4217 currency. */
export interface Money {
  currency: string;
  amountMinor: bigint;
}

// Building an Intl.NumberFormat costs more than formatting a whole order email: one per currency
// (at most 26³ well-formed codes), made on first use.
const formats = new Map<string, { format: Intl.NumberFormat; digits: number }>();
const PLAIN = { format: new Intl.NumberFormat("en", { minimumFractionDigits: 2 }), digits: 2 };

function currencyFormat(currency: string) {
  let made = formats.get(currency);
  if (!made) {
    const format = new Intl.NumberFormat("en", { style: "currency", currency });
    made = { format, digits: format.resolvedOptions().maximumFractionDigits ?? 2 };
    formats.set(currency, made);
  }
  return made;
}

/**
 * "€19.99" for 1999 EUR, "¥500" for 500 JPY: the minor units become an exact decimal string
 * (bigint division, no float ever), which Intl.NumberFormat formats without rounding.
 */
export function formatMoney(m: Money): string {
  const known = /^[A-Z]{3}$/.test(m.currency);
  const { format, digits } = known ? currencyFormat(m.currency) : PLAIN;
  const abs = m.amountMinor < 0n ? -m.amountMinor : m.amountMinor;
  const scale = 10n ** BigInt(digits);
  const fraction = digits > 0 ? `.${(abs % scale).toString().padStart(digits, "0")}` : "";
  const decimal = `${m.amountMinor < 0n ? "-" : ""}${abs / scale}${fraction}`;
  // Intl.NumberFormat takes a decimal string exactly (ES2023); the lib types still say number.
  const text = (format.format as unknown as (value: string) => string)(decimal);
  // A malformed code cannot be formatted as a currency: shown after the amount rather than lost.
  return known ? text : `${text} ${clean(m.currency, 8)}`.trim();
}

/** One line of an order, priced as it was when the order was placed. */
export interface OrderLineView {
  name: string;
  quantity: number;
  unitPrice: Money;
  lineTotal: Money;
}

/** An order as its emails show it, with the buyer's address. */
export interface OrderView {
  id: string;
  email: string;
  lines: OrderLineView[];
  total: Money;
}

/** Where an order moved after it was placed. */
export type OrderStage = "confirmed" | "shipped" | "delivered";

/** Who cancelled an order, as OrderCancelled says. */
export type Canceller = "buyer" | "admin" | "system" | "other";

/** The order's lines (quantity, name, unit price, line total) and its total. */
const orderSummary = (o: OrderView): Block[] => [
  {
    lines: o.lines.map(
      (l) =>
        `${l.quantity} × ${clean(l.name, 120) || "item"} at ${formatMoney(l.unitPrice)} = ${formatMoney(l.lineTotal)}`,
    ),
  },
  `Total: ${formatMoney(o.total)}`,
];

const orderRef = (o: OrderView) => clean(o.id, 64);

/** The confirmation that an order was placed. */
export function orderPlacedEmail(o: OrderView, id: string): Notice {
  return compose(id, o.email, "order_placed", "Your order is placed", [
    `Thank you for your order ${orderRef(o)}. Its items are reserved for you; we email you again when it is confirmed.`,
    ...orderSummary(o),
    "You can cancel it under My orders until it ships.",
  ]);
}

const STAGES: Record<OrderStage, { subject: string; what: (ref: string) => string }> = {
  confirmed: {
    subject: "Your order is confirmed",
    what: (ref) => `We confirmed your order ${ref} and are preparing it for shipping.`,
  },
  shipped: {
    subject: "Your order has shipped",
    what: (ref) => `Your order ${ref} has shipped and is on its way to you.`,
  },
  delivered: {
    subject: "Your order was delivered",
    what: (ref) => `Your order ${ref} was delivered. If anything is missing or damaged, contact us.`,
  },
};

/** An order moved forward: confirmed, shipped or delivered. */
export function orderStatusEmail(o: OrderView, stage: OrderStage, id: string): Notice {
  const s = STAGES[stage];
  return compose(id, o.email, `order_${stage}`, s.subject, [s.what(orderRef(o)), ...orderSummary(o)]);
}

const CANCELLED_BY: Record<Canceller, (ref: string) => string> = {
  buyer: (ref) => `You cancelled your order ${ref}.`,
  admin: (ref) => `The shop cancelled your order ${ref}.`,
  system: (ref) => `Your order ${ref} was cancelled because its items could not be kept for it.`,
  other: (ref) => `Your order ${ref} was cancelled.`,
};

/** An order was cancelled, by whom, and why when a reason was given. */
export function orderCancelledEmail(o: OrderView & { by: Canceller; reason: string }, id: string): Notice {
  const reason = clean(o.reason, 300);
  return compose(id, o.email, "order_cancelled", "Your order was cancelled", [
    CANCELLED_BY[o.by](orderRef(o)),
    ...(reason ? [`Reason: ${reason}`] : []),
    "The order was:",
    ...orderSummary(o),
  ]);
}

/** An email a service asked for (SendEmail): `text` as is, and the same text escaped as HTML. */
export function plainEmail(to: string, subject: string, text: string, id: string): Email {
  const html = text
    .split(/\r?\n\s*\r?\n/)
    .map((p) => `<p>${escapeHtml(p).replace(/\r?\n/g, "<br>")}</p>`)
    .join("\n");
  return { id, to, subject: clean(subject, 200), text, html };
}
