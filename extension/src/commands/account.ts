/** `Leeward: Sign In` and `Leeward: Refresh`. */
import * as vscode from 'vscode';

import { syncFromDaemon } from '../common/sync';
import { AccountSignInRequest } from '../protocol/methods';
import type { CommandContext } from './context';

/** Undefined when `text` is an http(s) URL, else why not. */
export function validateFleetUrl(text: string): string | undefined {
  try {
    const url = new URL(text.trim());
    if (url.protocol === 'http:' || url.protocol === 'https:') return undefined;
  } catch {
    // falls through
  }
  return 'The fleet URL, e.g. https://fleet.example.com or http://127.0.0.1:8470.';
}

export async function signIn(ctx: CommandContext): Promise<void> {
  const fleetUrl = await vscode.window.showInputBox({
    title: 'Sign In to a Leeward Fleet (1/2)',
    prompt: 'The fleet URL',
    value: ctx.store.account?.fleetUrl ?? ctx.fleetUrlSetting() ?? '',
    ignoreFocusOut: true,
    validateInput: validateFleetUrl,
  });
  if (fleetUrl === undefined) return;
  const token = await vscode.window.showInputBox({
    title: 'Sign In to a Leeward Fleet (2/2)',
    prompt: `Your token for ${fleetUrl.trim()} (your platform team issues it)`,
    password: true,
    ignoreFocusOut: true,
    validateInput: (text) => (text.trim() === '' ? 'The token cannot be empty.' : undefined),
  });
  if (token === undefined) return;
  const status = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Signing in to ${fleetUrl.trim()}…` },
    () =>
      ctx.daemon.request(AccountSignInRequest, { fleetUrl: fleetUrl.trim(), token: token.trim() }),
  );
  ctx.store.setAccount(status);
  ctx.log.info(`Signed in to ${status.fleetUrl ?? fleetUrl} as ${status.user ?? '?'}.`);
  void vscode.window.showInformationMessage(
    `Signed in to ${status.fleetUrl ?? fleetUrl.trim()} as ${status.user ?? 'you'}.`,
  );
  await syncFromDaemon(ctx.daemon, ctx.store);
}

export async function refresh(ctx: CommandContext): Promise<void> {
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Leeward: refreshing' },
    () => syncFromDaemon(ctx.daemon, ctx.store),
  );
}
