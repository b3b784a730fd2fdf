/** What the fleet tells the user, in the editor: the announcements' status-bar item, each
 * announcement as a notification once per revision (with its actions and Dismiss), and the
 * user's notifications (an expiry ahead, a failed backup, ...) as VS Code notifications with
 * their actions, reported seen to the daemon once shown. */
import * as vscode from 'vscode';

import type { CommandContext } from '../commands/context';
import {
  announcementBar,
  announcementMessage,
  announcementSeverity,
  AnnouncementWatch,
  extendHours,
  firstLine,
  isWebLink,
  notificationActions,
  notificationMessage,
  notificationSeverity,
  NotificationWatch,
  plainText,
  shorten,
  undismissed,
  type MessageSeverity,
} from '../common/announcements';
import type { Memento } from '../common/environments';
import { errorMessage, timeLabel } from '../common/format';
import type { Action, Announcement, Notification } from '../protocol/generated';
import {
  AnnouncementsDismissRequest,
  EnvironmentsExtendRequest,
  NotificationsSeenRequest,
} from '../protocol/methods';

export const ANNOUNCEMENTS_ITEM_ID = 'leeward.announcements';
export const DISMISS = 'Dismiss';

/** The commands an action of an announcement runs, on its environment. */
const ACTION_COMMANDS: Record<Exclude<Action['kind'], 'link'>, string> = {
  extend: 'leeward.extend',
  move: 'leeward.move',
  'backup-now': 'leeward.backUpNow',
  // A stopped environment starts again on its next connection.
  start: 'leeward.connect',
};

function showMessage(
  severity: MessageSeverity,
  message: string,
  buttons: string[],
): Thenable<string | undefined> {
  if (severity === 'error') return vscode.window.showErrorMessage(message, ...buttons);
  if (severity === 'warning') return vscode.window.showWarningMessage(message, ...buttons);
  return vscode.window.showInformationMessage(message, ...buttons);
}

/** An action's button pressed: a link opens in the browser (http and https only); a Leeward
 * action runs the extension's command on its environment (the only one the announcement
 * concerns, when the action names none; else the command asks). */
export async function runAction(
  ctx: CommandContext,
  action: Action,
  concerned: readonly string[] = [],
): Promise<void> {
  if (action.kind === 'link') {
    if (isWebLink(action.url)) await vscode.env.openExternal(vscode.Uri.parse(action.url));
    else ctx.log.warn(`Not opening ${JSON.stringify(action.url)}: only http(s) links open.`);
    return;
  }
  const environment = action.environment ?? (concerned.length === 1 ? concerned[0] : undefined);
  await vscode.commands.executeCommand(
    ACTION_COMMANDS[action.kind],
    ...(environment ? [environment] : []),
  );
}

/** The buttons of a message: one per action (labels made unique), and what each runs. */
function buttonsOf(actions: readonly Action[], extra: string[] = []): Map<string, Action | null> {
  const buttons = new Map<string, Action | null>();
  for (const action of actions) {
    let label = shorten(plainText(action.label), 40) || action.kind;
    while (buttons.has(label) || extra.includes(label)) label = `${label}…`;
    buttons.set(label, action);
  }
  for (const label of extra) buttons.set(label, null);
  return buttons;
}

export class Announcements implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;
  private list: Announcement[] = [];
  private readonly watch: AnnouncementWatch;

  constructor(
    private readonly ctx: CommandContext,
    memento: Memento,
  ) {
    this.watch = new AnnouncementWatch(memento);
    this.item = vscode.window.createStatusBarItem(
      ANNOUNCEMENTS_ITEM_ID,
      vscode.StatusBarAlignment.Left,
      -101,
    );
    this.item.name = 'Leeward Announcements';
    this.item.command = { title: 'Leeward Announcements', command: 'leeward.showAnnouncements' };
  }

  get announcements(): readonly Announcement[] {
    return this.list;
  }

  /** A new list from the daemon: the status bar redrawn, the news shown. */
  update(list: readonly Announcement[]): void {
    this.list = [...list];
    this.redraw();
    for (const announcement of this.watch.update(this.list)) void this.show(announcement);
  }

  /** The daemon stopped: nothing known. */
  clear(): void {
    this.list = [];
    this.redraw();
  }

  redraw(): void {
    const bar = announcementBar(this.list);
    if (!bar.visible) {
      this.item.hide();
      return;
    }
    this.item.text = bar.text;
    const tooltip = new vscode.MarkdownString(bar.tooltip);
    tooltip.isTrusted = false;
    tooltip.supportHtml = false;
    tooltip.supportThemeIcons = false;
    this.item.tooltip = tooltip;
    this.item.backgroundColor =
      bar.background === undefined
        ? undefined
        : new vscode.ThemeColor(`statusBarItem.${bar.background}Background`);
    this.item.show();
  }

  /** One announcement as a notification: its text (plain), its actions, and Dismiss. */
  async show(announcement: Announcement): Promise<void> {
    const buttons = buttonsOf(announcement.actions, [DISMISS]);
    const answer = await showMessage(
      announcementSeverity(announcement),
      announcementMessage(announcement),
      [...buttons.keys()],
    );
    if (answer === undefined) return;
    try {
      const action = buttons.get(answer);
      if (action) await runAction(this.ctx, action, announcement.environments);
      else if (answer === DISMISS) await this.dismiss(announcement);
    } catch (error) {
      this.failed(error);
    }
  }

  /** Dismissed for the user (in every window), at this revision: a new text shows it again. */
  async dismiss(announcement: Announcement): Promise<void> {
    const dismissed = await this.ctx.daemon.request(AnnouncementsDismissRequest, {
      id: announcement.id,
      revision: announcement.revision,
    });
    this.list = this.list.map((a) => (a.id === dismissed.id ? dismissed : a));
    this.redraw();
    this.ctx.log.info(
      `Dismissed announcement ${announcement.id} (revision ${announcement.revision}).`,
    );
  }

  /** The status bar's click: the undismissed announcements to pick from, then the one picked
   * as a notification again (its actions, Dismiss). */
  async pick(): Promise<void> {
    const shown = undismissed(this.list);
    if (shown.length === 0) {
      void vscode.window.showInformationMessage('Leeward: no announcements now.');
      return;
    }
    const picked = await vscode.window.showQuickPick(
      shown.map((announcement) => ({
        label: firstLine(announcement.text),
        description: `${announcement.severity} · since ${timeLabel(announcement.startsAt)}`,
        detail: shorten(plainText(announcement.text), 200),
        announcement,
      })),
      { title: 'Leeward announcements', placeHolder: 'Choose one to act on or dismiss' },
    );
    if (picked !== undefined) await this.show(picked.announcement);
  }

  private failed(error: unknown): void {
    const message = errorMessage(error);
    this.ctx.log.error(`Announcement: ${message}`);
    void vscode.window.showErrorMessage(message);
  }

  dispose(): void {
    this.item.dispose();
  }
}

export class Notifications {
  private readonly watch = new NotificationWatch();
  /** Reported seen to a daemon that answered. */
  private readonly told = new Set<number>();

  constructor(private readonly ctx: CommandContext) {}

  /** New notifications from the daemon: each shown once in this window, then reported seen
   * (so the fleet delivers it to the editor once, and a closed window loses none). */
  async receive(notifications: readonly Notification[]): Promise<void> {
    const news = this.watch.update(notifications);
    const shown = news.map((n) => this.show(n));
    // Shown now, or before by a daemon that could not tell the fleet (it sends them again).
    const ids = notifications.map((n) => n.id).filter((id) => !this.told.has(id));
    if (ids.length > 0) {
      try {
        await this.ctx.daemon.request(NotificationsSeenRequest, { ids });
        for (const id of ids) this.told.add(id);
      } catch (error) {
        this.ctx.log.warn(`Reporting notifications seen: ${errorMessage(error)}`);
      }
    }
    await Promise.all(shown);
  }

  async show(notification: Notification): Promise<void> {
    const buttons = buttonsOf(notificationActions(notification));
    this.ctx.log.info(
      `Notification ${notification.id} (${notification.kind}): ${notification.title}`,
    );
    const answer = await showMessage(
      notificationSeverity(notification),
      notificationMessage(notification),
      [...buttons.keys()],
    );
    const action = answer === undefined ? undefined : buttons.get(answer);
    if (!action) return;
    try {
      if (action.kind === 'extend') await this.extend(action, notification);
      else
        await runAction(
          this.ctx,
          action,
          notification.environment ? [notification.environment] : [],
        );
    } catch (error) {
      const message = errorMessage(error);
      this.ctx.log.error(`Notification ${notification.id}: ${message}`);
      void vscode.window.showErrorMessage(message);
    }
  }

  /** One click: `leeward/environments/extend` by the action's hours. */
  private async extend(action: Action, notification: Notification): Promise<void> {
    const name = action.environment ?? notification.environment;
    if (!name) {
      await vscode.commands.executeCommand('leeward.extend');
      return;
    }
    const hours = extendHours(action);
    const environment = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Extending ${name}…` },
      () => this.ctx.daemon.request(EnvironmentsExtendRequest, { environment: name, hours }),
    );
    this.ctx.store.upsert(environment);
    this.ctx.log.info(
      `Extended ${environment.name} by ${hours} h: expires ${environment.expiresAt}.`,
    );
    void vscode.window.showInformationMessage(
      `${environment.name} now expires ${timeLabel(environment.expiresAt)}.`,
    );
  }
}
