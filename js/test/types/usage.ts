// The API, as a TypeScript user writes it, checked against the published
// declarations (types/, through the package's own name) by `tsc -p tsconfig.json`.

import {
  ChanservError,
  ConnectionLost,
  DeadlineExceeded,
  RemoteError,
  ServerShuttingDown,
  ServiceNotFound,
  StreamCancelled,
  connect,
  type ChanservNode,
  type Source,
} from "chanserv-trio";

export async function example(signal: AbortSignal): Promise<void> {
  const node: ChanservNode = await connect("ws://127.0.0.1:8000/", { dialTimeout: 5000 });
  const deadline = Date.now() + 5000;
  for await (const source of node.post("chanserv", new TextEncoder().encode("hello"), { signal, deadline, tags: { bucket: "k" } })) {
    const header: Uint8Array = source.header;
    const remote: string = source.meta.remoteAddr;
    console.log(header, remote);
    for await (const frame of source) {
      const bytes: Uint8Array = frame;
      console.log(bytes.length);
    }
    source.cancel();
  }
  node.serve("echo", async function* (body: Uint8Array) {
    yield { header: "h", frames: [body, "text"] };
  });
  await node.close();
}

export function classify(error: unknown): string {
  if (error instanceof RemoteError) return `${error.kind}: ${error.message}`;
  for (const kind of [ConnectionLost, ServiceNotFound, DeadlineExceeded, StreamCancelled, ServerShuttingDown]) {
    if (error instanceof kind) return kind.name;
  }
  return error instanceof ChanservError ? "ChanservError" : "other";
}

export function take(source: Source): AsyncIterable<Uint8Array> {
  return source;
}
