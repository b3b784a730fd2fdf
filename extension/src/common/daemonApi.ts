/** What commands and views need of the daemon, apart from how it runs (tests give a fake). */
import type { RequestType } from 'vscode-jsonrpc';

import type { CreateContainer, CreateDevserver, Environment } from '../protocol/generated';
import type { DaemonState } from './status';

/** Params that may carry an LSP progress token. */
export interface WorkDone {
  workDoneToken?: string | number | null;
}

/** One `$/progress` value: its message and percentage, when it has them. */
export type ProgressListener = (
  message: string | undefined,
  percentage: number | undefined,
) => void;

export interface DaemonApi {
  readonly state: DaemonState;
  /** Sends one request; rejects with the daemon's one-sentence message when it fails. */
  request<P, R>(type: RequestType<P, R, void>, params: P): Promise<R>;
  /** `leeward/environments/create` with a progress token; `onProgress` gets each message
   * (`placing …`, `starting …`, `certifying …`, `ready …`). */
  create(
    request: CreateDevserver | CreateContainer,
    onProgress: (message: string) => void,
  ): Promise<Environment>;
  /** A request that takes a `workDoneToken` (backup now, move), sent with a token of its own:
   * `onProgress` gets each LSP `$/progress` message and percentage until it answers. */
  withProgress<P extends WorkDone, R>(
    type: RequestType<P, R, void>,
    params: Omit<P, 'workDoneToken'>,
    onProgress: ProgressListener,
  ): Promise<R>;
  /** Restarts the daemon (serialised); resolves when it runs again, or has failed to. */
  restart(): Promise<void>;
}
