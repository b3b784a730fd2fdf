/** The daemon's JSON-RPC client in VS Code: vscode-languageclient's LanguageClient over the
 * daemon's stdio, which writes the daemon's log messages and stderr to the Leeward output
 * channel. It does not restart a daemon that exited: the Daemon does (daemon.ts), within a
 * budget, through its one restart queue. */
import type * as vscode from 'vscode';
import type { RequestParam } from 'vscode-jsonrpc';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  WorkDoneProgress,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';

import type { DaemonClient, DaemonClientFactory } from './daemon';
import { errorMessage } from './format';

export function languageClientFactory(log: vscode.LogOutputChannel): DaemonClientFactory {
  return (launch) => {
    const server: ServerOptions = {
      command: launch.command,
      args: launch.args,
      options: launch.cwd !== undefined ? { cwd: launch.cwd } : {},
    };
    const options: LanguageClientOptions = {
      documentSelector: [],
      outputChannel: log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: launch.settings,
      errorHandler: {
        // vscode-languageclient's default: go on after up to 3 errors on the stream, else stop.
        error: (_error, _message, count) => ({
          action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
        }),
        closed: () => ({
          action: CloseAction.DoNotRestart,
          message: 'The Leeward daemon exited.',
          handled: true,
        }),
      },
      initializationFailedHandler: (error) => {
        log.error(`The daemon refused to initialise: ${errorMessage(error)}`);
        return false;
      },
    };
    const client = new LanguageClient('leeward', 'Leeward daemon', server, options);
    const adapter: DaemonClient = {
      start: () => client.start(),
      stop: (timeoutMs) => client.stop(timeoutMs),
      get isStopped() {
        return client.state === State.Stopped;
      },
      // RequestParam<P> is P for every params model (none is null); TypeScript cannot see
      // that for an unresolved P.
      sendRequest: (type, params) => client.sendRequest(type, params as RequestParam<never>),
      onNotification: (type, handler) => client.onNotification(type, handler),
      onWorkDoneProgress: (token, handler) =>
        client.onProgress(WorkDoneProgress.type, token, (value) =>
          handler(value.message, value.kind === 'end' ? undefined : value.percentage),
        ),
      onDidChangeState: (listener) =>
        client.onDidChangeState(({ newState }) =>
          listener(
            newState === State.Running
              ? 'running'
              : newState === State.Starting
                ? 'starting'
                : 'stopped',
          ),
        ),
    };
    return adapter;
  };
}
