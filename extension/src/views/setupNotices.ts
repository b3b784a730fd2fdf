/** One warning when a list of environments brings a setup step that failed or a profile sync
 * conflict that the previous list did not have. The tree shows them all; this says that one
 * just happened. */
import * as vscode from 'vscode';

import type { Environment } from '../protocol/generated';

export interface SetupNotice {
  environment: Environment;
  /** Tells one occurrence from another: a step that fails again after a retry is news. */
  key: string;
  text: string;
}

export function noticesOf(environments: readonly Environment[]): SetupNotice[] {
  const notices: SetupNotice[] = [];
  for (const environment of environments) {
    for (const item of environment.setup) {
      if (item.state !== 'failed') continue;
      notices.push({
        environment,
        key: `${environment.id}\0setup\0${item.kind}\0${item.name}\0${item.startedAt ?? ''}`,
        text: `${item.kind} ${item.name} failed${item.detail ? ` (${item.detail.replace(/\.$/, '')})` : ''}`,
      });
    }
    for (const conflict of environment.sync?.conflicts ?? []) {
      notices.push({
        environment,
        key: `${environment.id}\0conflict\0${conflict.path}\0${conflict.copyPath}`,
        text: `${conflict.path} conflicts with your profile (its version is at ${conflict.copyPath})`,
      });
    }
  }
  return notices;
}

/** Remembers the last list's notices; `update` returns the new ones. The first list after a
 * (re)start only sets what is known: what was there before is not news. */
export class SetupNoticeWatch {
  private known: Set<string> | undefined;

  update(environments: readonly Environment[] | undefined): SetupNotice[] {
    if (environments === undefined) {
      this.known = undefined; // the daemon stopped: the next list is a new start
      return [];
    }
    const notices = noticesOf(environments);
    const known = this.known;
    this.known = new Set(notices.map((n) => n.key));
    return known === undefined ? [] : notices.filter((n) => !known.has(n.key));
  }
}

export function noticeMessage(notices: readonly SetupNotice[]): string {
  const names = [...new Set(notices.map((n) => n.environment.name))];
  if (notices.length === 1 && notices[0]) {
    return `Leeward: ${notices[0].environment.name}: ${notices[0].text}.`;
  }
  const shown = notices.slice(0, 3).map((n) => `${n.environment.name}: ${n.text}`);
  const more = notices.length > 3 ? `; and ${notices.length - 3} more` : '';
  return `Leeward: ${notices.length} problems in ${names.join(', ')}: ${shown.join('; ')}${more}.`;
}

export const SHOW_DETAILS = 'Show Details';

/** The warning, with a button that shows the (first) environment. */
export async function showNotices(notices: readonly SetupNotice[]): Promise<void> {
  const first = notices[0];
  if (first === undefined) return;
  const answer = await vscode.window.showWarningMessage(noticeMessage(notices), SHOW_DETAILS);
  if (answer === SHOW_DETAILS) {
    await vscode.commands.executeCommand('leeward.showEnvironment', first.environment.name);
  }
}
