/**
 * The loopback listener of a sign-in by the authorization code flow (RFC 8252 7.3), for identity
 * providers without the device grant: the browser comes back to http://127.0.0.1:<port>/callback
 * with the code and state, which the client hands to the gateway (which alone holds the PKCE
 * verifier and exchanges the code). Bound to 127.0.0.1 on a port the system picks, for one redirect.
 *
 * Only the redirect carrying this sign-in's `state` (read from the authorization URL) is taken: any
 * program on the computer, or a web page the person has open, can send a request to the listener,
 * and a code of theirs handed to the gateway would sign the device in as someone else (or spend the
 * sign-in). Other requests are answered 400 and the listener goes on waiting.
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const CALLBACK_PATH = "/callback";
const DONE_PAGE = "<!doctype html><title>Signed in</title><p>You can close this window and return to the application.</p>";
const WRONG_STATE_PAGE = "<!doctype html><title>Not this sign-in</title><p>This is not the sign-in the application started.</p>";

/** The `state` the gateway put in the authorization URL: the one the redirect must carry back. */
export function stateOf(authorizationUrl: string): string {
  return new URL(authorizationUrl).searchParams.get("state") ?? "";
}

function sameState(received: string, expected: string): boolean {
  const a = Buffer.from(received);
  const b = Buffer.from(expected);
  return expected !== "" && a.length === b.length && timingSafeEqual(a, b);
}

export class LoopbackListener {
  private expectedState = "";
  private received: Record<string, string> | null = null;
  private arrived: (query: Record<string, string>) => void = () => undefined;
  private readonly arrival: Promise<Record<string, string>>;

  private constructor(private readonly server: Server) {
    this.arrival = new Promise((resolve) => {
      this.arrived = resolve;
    });
    server.on("request", (request: IncomingMessage, response: ServerResponse) => this.answer(request, response));
  }

  static async start(): Promise<LoopbackListener> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return new LoopbackListener(server);
  }

  get redirectUri(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}${CALLBACK_PATH}`;
  }

  /** Set once the sign-in started (the listener's address had to be known first). */
  expectState(state: string): void {
    this.expectedState = state;
  }

  /** The redirect's query (code and state, or the provider's error), or null after `timeoutMs`. */
  async waitForRedirect(timeoutMs: number): Promise<Record<string, string> | null> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), Math.max(timeoutMs, 0));
    });
    try {
      return await Promise.race([this.arrival, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops listening and drops open connections (a browser keeps its connection alive). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private answer(request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(request.url ?? "/", "http://127.0.0.1");
    if (request.method !== "GET" || url.pathname !== CALLBACK_PATH || this.received !== null) {
      response.writeHead(404, { "content-length": "0" }).end();
      return;
    }
    const query = Object.fromEntries(url.searchParams);
    if (!sameState(query.state ?? "", this.expectedState)) {
      this.page(response, 400, WRONG_STATE_PAGE);
      return;
    }
    this.received = query;
    this.page(response, 200, DONE_PAGE);
    this.arrived(query);
  }

  private page(response: ServerResponse, status: number, page: string): void {
    response.writeHead(status, { "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(page) }).end(page);
  }
}
