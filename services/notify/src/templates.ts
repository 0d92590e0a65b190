import type { Email } from "./mailer.ts";

const escapeHtml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

/** The welcome email for a new account. */
export function welcomeEmail(to: { email: string; displayName: string }, id: string): Email {
  const name = to.displayName || "there";
  return {
    id,
    to: to.email,
    subject: "Welcome to Protomesh",
    text: `Hi ${name},\n\nyour Protomesh account is ready. Sign in any time with ${to.email}.\n\nIf you did not sign up, ignore this email.\n`,
    html: `<p>Hi ${escapeHtml(name)},</p><p>your Protomesh account is ready. Sign in any time with ${escapeHtml(to.email)}.</p><p>If you did not sign up, ignore this email.</p>`,
  };
}
