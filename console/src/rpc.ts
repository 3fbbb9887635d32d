// The services, through gRPC-Web on this page's own origin. The browser presents the
// principal's client certificate on the TLS connection; the server checks it on every call
// exactly as for any other client, so the console has no API of its own.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

const transport = createGrpcWebTransport({ baseUrl: location.origin });

export function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

/** The server's message for a failed call, without the library's "[code]" prefix. */
export function message(e: unknown): string {
  if (e instanceof ConnectError) return `${Code[e.code]}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

export { Code, ConnectError };
