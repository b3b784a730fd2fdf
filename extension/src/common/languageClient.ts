/** The daemon's JSON-RPC client in VS Code: vscode-languageclient's LanguageClient over the
 * daemon's stdio, which also restarts a daemon that crashed (a few times) and writes the
 * daemon's log messages and stderr to the Leeward output channel. */
import type * as vscode from 'vscode';
import type { RequestParam } from 'vscode-jsonrpc';
import {
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
        client.onProgress(WorkDoneProgress.type, token, (value) => handler(value.message)),
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
