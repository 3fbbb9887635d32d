// The services, through gRPC-Web on this page's own origin. The browser presents the
// principal's client certificate on the TLS connection; the server checks it on every call
// exactly as for any other client, so the console has no API of its own.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";

const transport = createGrpcWebTransport({ baseUrl: location.origin });

export function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

/** The server's message for a failed call, without the library's "[code]" prefix. */
export function message(e: unknown): string {
  if (e instanceof ConnectError) return `${Code[e.code]}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

/** The google.rpc.ErrorInfo the server attaches to every error (docs/errors.md): its reason
 * and metadata, read from the status details with the wire reader (the page carries no
 * googleapis types). */
export function errorInfo(e: unknown): { reason: string; metadata: Record<string, string> } | null {
  if (!(e instanceof ConnectError)) return null;
  for (const d of e.details) {
    if (!("type" in d) || d.type !== "google.rpc.ErrorInfo") continue;
    const r = new BinaryReader(d.value);
    let reason = "";
    const metadata: Record<string, string> = {};
    while (r.pos < r.len) {
      const [no, wire] = r.tag();
      if (no === 1) reason = r.string();
      else if (no === 3) {
        const m = new BinaryReader(r.bytes());
        let key = "";
        let value = "";
        while (m.pos < m.len) {
          const [n, w] = m.tag();
          if (n === 1) key = m.string();
          else if (n === 2) value = m.string();
          else m.skip(w);
        }
        metadata[key] = value;
      } else r.skip(wire);
    }
    return { reason, metadata };
  }
  return null;
}

export { Code, ConnectError };
