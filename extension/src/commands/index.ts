/** Every `leeward.*` command, wired to its handler. A handler's failure is shown as the
 * daemon said it (one sentence) and logged. */
import * as vscode from 'vscode';

import { errorMessage } from '../common/format';
import { refresh, signIn } from './account';
import { backUpNow, move, restorePath, restoreToNew } from './backups';
import { connect, openTerminal } from './connect';
import type { CommandContext } from './context';
import { createEnvironment } from './create';
import { extend, remove, showEnvironment } from './manage';

export const COMMANDS = {
  'leeward.createEnvironment': (ctx: CommandContext) => createEnvironment(ctx),
  'leeward.connect': (ctx: CommandContext, arg?: unknown) => connect(ctx, arg),
  'leeward.openTerminal': (ctx: CommandContext, arg?: unknown) => openTerminal(ctx, arg),
  'leeward.extend': (ctx: CommandContext, arg?: unknown) => extend(ctx, arg),
  'leeward.delete': (ctx: CommandContext, arg?: unknown) => remove(ctx, arg),
  'leeward.showEnvironment': (ctx: CommandContext, arg?: unknown) => showEnvironment(ctx, arg),
  'leeward.showLogs': (ctx: CommandContext) => ctx.log.show(),
  'leeward.restartDaemon': (ctx: CommandContext) => ctx.daemon.restart(),
  'leeward.signIn': (ctx: CommandContext) => signIn(ctx),
  'leeward.refresh': (ctx: CommandContext) => refresh(ctx),
  'leeward.backUpNow': (ctx: CommandContext, arg?: unknown) => backUpNow(ctx, arg),
  'leeward.restoreToNewDevserver': (ctx: CommandContext, arg?: unknown) => restoreToNew(ctx, arg),
  'leeward.restorePath': (ctx: CommandContext, arg?: unknown) => restorePath(ctx, arg),
  'leeward.move': (ctx: CommandContext, arg?: unknown) => move(ctx, arg),
  'leeward.showAnnouncements': (ctx: CommandContext) => ctx.announcements?.pick(),
} satisfies Record<string, (ctx: CommandContext, arg?: unknown) => unknown>;

export type CommandId = keyof typeof COMMANDS;

export function registerCommands(ctx: CommandContext): vscode.Disposable[] {
  return Object.entries(COMMANDS).map(([id, handler]) =>
    vscode.commands.registerCommand(id, async (arg?: unknown) => {
      try {
        await handler(ctx, arg);
      } catch (error) {
        const message = errorMessage(error);
        ctx.log.error(`${id}: ${message}`);
        const logs = 'Show Logs';
        void vscode.window.showErrorMessage(message, logs).then((answer) => {
          if (answer === logs) ctx.log.show();
        });
      }
    }),
  );
}
