// Checking a proof bundle (`ExportProof`, docs/ledger.md) in the browser, with WebCrypto only
// and against a verifier key the auditor pinned: the checkpoint's Ed25519 signature, each
// record's leaf hash and inclusion proof (RFC 9162 §2.1.3.2) against the signed root, that the
// records are the request's (the one on screen) and in ledger order, that they hold its
// submission, that the bundle's image list is the images the records name, and each image's
// SHA-256. Every step says whether it held, so a tampered bundle shows where it fails.
// `countersign ledger verify-proof` stays the reference: it also checks the witnesses'
// cosignatures and replays the records through the state machine.

/** One step of the check. */
export interface Step {
  key: string;
  ok: boolean;
  detail: string;
}

/** The parts of a ledger record the checks read. */
interface Rec {
  request?: string;
  event?: { type?: string; submission?: { images?: { sha256: string }[] }; added?: { sha256: string }[] };
}

interface Bundle {
  format: string;
  request_id: string;
  origin: string;
  checkpoint: string;
  tree_size: number;
  records: { index: number; record: string; inclusion_proof: string[] }[];
  images: { sha256: string; media_type: string }[];
}

const enc = new TextEncoder();

function b64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}

/** A verifier key `<name>+<8 hex key id>+<base64(0x01 ‖ Ed25519 public key)>`. */
export interface VerifierKey {
  name: string;
  id: Uint8Array;
  key: Uint8Array;
}

export async function parseVerifierKey(text: string): Promise<VerifierKey> {
  // The key's base64 may itself hold "+": only the first two separate.
  const text2 = text.trim();
  const a = text2.indexOf("+");
  const b = text2.indexOf("+", a + 1);
  if (a <= 0 || b < 0) throw new Error("a verifier key is <name>+<key id>+<key>");
  const [name, idHex, keyB64] = [text2.slice(0, a), text2.slice(a + 1, b), text2.slice(b + 1)];
  const raw = b64(keyB64);
  if (raw.length !== 33 || raw[0] !== 0x01) throw new Error("not an Ed25519 verifier key");
  const key = raw.slice(1);
  const id = (await sha256(enc.encode(name + "\n"), new Uint8Array([0x01]), key)).slice(0, 4);
  if (hex(id) !== idHex.toLowerCase()) throw new Error("the key id does not match the key");
  return { name, id, key };
}

/** RFC 9162 §2.1.3.2: the root an inclusion proof of `leaf` at `index` in a tree of `size`
 * leads to, or null when the proof's shape is wrong for that index and size. */
async function rootFromInclusion(index: number, size: number, leaf: Uint8Array, proof: Uint8Array[]): Promise<Uint8Array | null> {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const one = new Uint8Array([0x01]);
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(one, p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await sha256(one, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/** Checks a bundle; `image` fetches an image's bytes by SHA-256 (from the server). */
export async function verifyBundle(
  text: string,
  pinned: VerifierKey,
  requestId: string,
  image: (sha256: string) => Promise<Uint8Array>,
): Promise<Step[]> {
  const steps: Step[] = [];
  const step = (key: string, ok: boolean, detail: string) => {
    steps.push({ key, ok, detail });
    return ok;
  };
  let b: Bundle;
  try {
    b = JSON.parse(text) as Bundle;
  } catch (e) {
    step("v_format", false, String(e));
    return steps;
  }
  if (!step("v_format", b.format === "countersign-proof-bundle/1", b.format)) return steps;
  if (!step("v_request", b.request_id === requestId, b.request_id)) return steps;

  // The checkpoint: a signed note whose text ends at the blank line before the signatures.
  const cut = b.checkpoint.indexOf("\n\n");
  if (cut < 0) {
    step("v_signature", false, "no signature lines");
    return steps;
  }
  const body = b.checkpoint.slice(0, cut + 1);
  const [origin, sizeText, rootText] = body.split("\n");
  const size = Number(sizeText);
  const root = b64(rootText ?? "");
  const prefix = `— ${pinned.name} `;
  let signed = false;
  for (const line of b.checkpoint.slice(cut + 2).split("\n")) {
    if (!line.startsWith(prefix)) continue;
    const sig = b64(line.slice(prefix.length));
    if (sig.length !== 68 || !equal(sig.slice(0, 4), pinned.id)) continue;
    const key = await crypto.subtle.importKey("raw", pinned.key as BufferSource, { name: "Ed25519" }, false, ["verify"]);
    signed = await crypto.subtle.verify("Ed25519", key, sig.slice(4) as BufferSource, enc.encode(body) as BufferSource);
    if (signed) break;
  }
  if (!step("v_signature", signed, `${origin} · ${size}`)) return steps;
  if (!step("v_origin", origin === b.origin && size === b.tree_size, origin)) return steps;

  // Every record: its leaf hash leads, by its proof, to the signed root.
  let previous = -1;
  const named = new Set<string>();
  for (const [i, r] of b.records.entries()) {
    if (!step("v_history", Number.isSafeInteger(r.index) && r.index >= 0, `#${r.index}`)) return steps;
    const payload = b64(r.record);
    const leaf = await sha256(new Uint8Array([0x00]), payload);
    const got = await rootFromInclusion(r.index, size, leaf, r.inclusion_proof.map(b64));
    if (!step("v_inclusion", got !== null && equal(got, root), `#${r.index}`)) return steps;
    let parsed: Rec;
    try {
      parsed = JSON.parse(new TextDecoder().decode(payload)) as Rec;
    } catch {
      step("v_history", false, `#${r.index}`);
      return steps;
    }
    // The first record is the request's submission (or its registered fallback).
    const opens = ["submitted", "fallback_registered"].includes(parsed.event?.type ?? "");
    const ok = parsed.request === requestId && r.index > previous && (i > 0 || opens);
    if (!step("v_history", ok, `#${r.index} ${parsed.event?.type ?? ""}`)) return steps;
    previous = r.index;
    for (const img of parsed.event?.submission?.images ?? []) named.add(img.sha256);
    for (const img of parsed.event?.added ?? []) named.add(img.sha256);
  }
  if (!step("v_history", b.records.length > 0, String(b.records.length))) return steps;
  const listed = new Set(b.images.map((i) => i.sha256));
  const same = listed.size === named.size && [...listed].every((h) => named.has(h));
  if (!step("v_images_listed", same, `${listed.size} / ${named.size}`)) return steps;

  // Every image the records name: its bytes hash to the name.
  for (const img of b.images) {
    let ok = false;
    try {
      ok = hex(await sha256(await image(img.sha256))) === img.sha256;
    } catch {
      ok = false;
    }
    if (!step("v_image", ok, img.sha256.slice(0, 16) + "…")) return steps;
  }
  return steps;
}
