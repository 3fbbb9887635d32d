// Amounts and times as the bank writes them, in the language chosen.

import { currentLang } from "./i18n";

/** Minor units (exact, as a bigint) as an amount in `currency`: ¥1,234,567.89. The decimal
 * string is built exactly, so no amount loses a fen to floating point. */
export function money(minor: bigint, currency: string): string {
  const fmt = currencyFormat(currentLang(), currency);
  if (!fmt) return `${minor} (${currency})`;
  const digits = fmt.resolvedOptions().maximumFractionDigits ?? 2;
  const negative = minor < 0n;
  const abs = negative ? -minor : minor;
  const scale = 10n ** BigInt(digits);
  const whole = abs / scale;
  const frac = (abs % scale).toString().padStart(digits, "0");
  const text = `${negative ? "-" : ""}${whole}${digits > 0 ? "." + frac : ""}`;
  // Intl formats a decimal string exactly (ES2023); the cast is for older lib typings.
  return fmt.format(text as unknown as number);
}

/** A typed amount ("1,234.5") in minor units of the currency, or null when it is not one (or
 * has more decimals than the currency). */
export function toMinor(typed: string, currency: string): bigint | null {
  const fmt = currencyFormat("en", currency);
  if (!fmt) return null;
  const digits = fmt.resolvedOptions().maximumFractionDigits ?? 2;
  const m = /^(\d+)(?:\.(\d*))?$/.exec(typed.replace(/[,\s¥￥]/g, ""));
  if (!m || (m[2] ?? "").length > digits) return null;
  return BigInt(m[1]) * 10n ** BigInt(digits) + BigInt((m[2] ?? "").padEnd(digits, "0") || "0");
}

/** The currency's format in `lang`, which knows its minor-unit digits; null for a code Intl
 * does not know. */
function currencyFormat(lang: string, currency: string): Intl.NumberFormat | null {
  try {
    return new Intl.NumberFormat(lang, { style: "currency", currency });
  } catch {
    return null;
  }
}

/** A date and time: 2026-12-07 14:03:09 in Chinese, 7 Dec 2026, 14:03:09 in English. */
export function dateTime(d: Date | undefined): string {
  if (!d) return "";
  if (currentLang() === "zh-CN") {
    const p = (n: number) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  return new Intl.DateTimeFormat("en-GB", {
    dateStyle: "medium",
    timeStyle: "medium",
    hour12: false,
  }).format(d);
}

/** Seconds left as m:ss. */
export function minutesSeconds(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
