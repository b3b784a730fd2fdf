/** What the extension makes of what the fleet tells a user: the announcements' status-bar item
 * (how many, the most severe one's first line), which announcements to show as a notification
 * (once per revision), how severe a notification is, and the text of both made inert.
 *
 * Announcements are written by operators and notifications come from templates filled with
 * names: both are shown as text. Markdown keeps its emphasis and lists, but no HTML (escaped),
 * no images (they would load), and no links other than http(s) (no `command:` links). */
import type {
  Action,
  Announcement,
  Notification,
  NotificationKind,
  Severity,
} from '../protocol/generated';
import type { Memento } from './environments';

const RANK: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/** The announcements to show: active and not dismissed, the most severe first, then the
 * newest. */
export function undismissed(announcements: readonly Announcement[]): Announcement[] {
  return announcements
    .filter((a) => a.active && !a.dismissed)
    .sort(
      (a, b) =>
        RANK[a.severity] - RANK[b.severity] ||
        Date.parse(b.startsAt) - Date.parse(a.startsAt) ||
        b.id - a.id,
    );
}

/** One line of plain text out of Markdown: the first line with text, without its markup, no
 * longer than `max` characters. */
export function firstLine(text: string, max = 60): string {
  const line = text.split(/\r?\n/).find((l) => l.trim() !== '') ?? '';
  return shorten(plainText(line), max);
}

/** Markdown as plain text on one line: links as their label (an http(s) target after it),
 * emphasis marks dropped, whitespace collapsed. For a notification, which renders Markdown
 * links (no link survives) and shows HTML as text. */
export function plainText(markdown: string): string {
  return markdown
    .replace(/!?\[([^\]]*)\]\(([^)]*)\)/g, (_, label: string, target: string) =>
      isWebLink(target.trim()) && label.trim() !== target.trim() ? `${label} (${target})` : label,
    )
    .replace(/^\s{0,3}(#{1,6}\s+|>\s*|[-*+]\s+)/, '')
    .replace(/(\*\*|__|\*|_|`)/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

export function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1).trimEnd()}…`;
}

/** Markdown for a MarkdownString that is not trusted and supports no HTML: HTML characters
 * escaped (shown as themselves), images dropped to their label, links kept only to http(s)
 * (anything else is shown as text). */
export function inertMarkdown(markdown: string): string {
  const escape = (text: string): string => text.replace(/[\\<>&[\]]/g, (c) => `\\${c}`);
  const link = /(!?)\[([^\]]*)\]\(([^)\s]*)(\s+"[^"]*")?\)/g;
  let out = '';
  let last = 0;
  for (const match of markdown.matchAll(link)) {
    const [whole, image, label = '', target = ''] = match;
    out += escape(markdown.slice(last, match.index));
    out +=
      !image && isWebLink(target)
        ? `[${escape(label)}](${target})`
        : `${escape(label)} \\(${escape(target)}\\)`;
    last = match.index + whole.length;
  }
  // Brackets are escaped outside the links kept: no reference link (`[x][r]`, `[r]: command:…`).
  return out + escape(markdown.slice(last));
}

export function isWebLink(url: string | null | undefined): url is string {
  if (!url) return false;
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:';
  } catch {
    return false;
  }
}

export interface AnnouncementBar {
  visible: boolean;
  text: string;
  /** Inert Markdown (see inertMarkdown). */
  tooltip: string;
  background: 'warning' | 'error' | undefined;
}

const ICON: Record<Severity, string> = {
  critical: '$(error)',
  warning: '$(warning)',
  info: '$(megaphone)',
};

/** The status-bar item: hidden without an undismissed announcement; else how many and the most
 * severe one's first line, its full text (each one's) in the tooltip. */
export function announcementBar(announcements: readonly Announcement[]): AnnouncementBar {
  const shown = undismissed(announcements);
  const top = shown[0];
  if (top === undefined) return { visible: false, text: '', tooltip: '', background: undefined };
  const count = shown.length > 1 ? ` ${shown.length}` : '';
  const tooltip = shown
    .map((a) => `**${a.severity}**${whenLabel(a)}\n\n${inertMarkdown(a.text)}`)
    .join('\n\n---\n\n');
  return {
    visible: true,
    text: `${ICON[top.severity]}${count} ${plainTextForBar(firstLine(top.text))}`,
    tooltip: `${tooltip}\n\n---\n\nClick to see them, act on them or dismiss them.`,
    background:
      top.severity === 'critical' ? 'error' : top.severity === 'warning' ? 'warning' : undefined,
  };
}

/** A status-bar text shows `$(name)` as an icon: the announcement's own are shown as text. */
function plainTextForBar(text: string): string {
  return text.replace(/\$\(/g, '$\u200b(');
}

function whenLabel(a: Announcement): string {
  return a.endsAt ? ` · until ${new Date(a.endsAt).toUTCString()}` : '';
}

export const SHOWN_KEY = 'leeward.announcementsShown';

/** Which revision of each announcement was shown as a notification (kept in VS Code's
 * globalState, so a reload or another window does not show it again); `update` returns the
 * ones to show now: undismissed, and not shown at this revision. */
export class AnnouncementWatch {
  constructor(private readonly memento: Memento) {}

  update(announcements: readonly Announcement[]): Announcement[] {
    const shown = { ...(this.memento.get<Record<string, number>>(SHOWN_KEY) ?? {}) };
    const news = undismissed(announcements).filter((a) => shown[String(a.id)] !== a.revision);
    if (news.length === 0) return [];
    for (const a of news) shown[String(a.id)] = a.revision;
    // Only announcements still active are remembered: the map does not grow for ever.
    const live = new Set(announcements.map((a) => String(a.id)));
    for (const id of Object.keys(shown)) if (!live.has(id)) delete shown[id];
    void this.memento.update(SHOWN_KEY, shown);
    return news;
  }
}

export type MessageSeverity = 'information' | 'warning' | 'error';

export function announcementSeverity(a: Pick<Announcement, 'severity'>): MessageSeverity {
  return a.severity === 'critical' ? 'error' : a.severity === 'warning' ? 'warning' : 'information';
}

const KIND_SEVERITY: Record<NotificationKind, MessageSeverity> = {
  expiry: 'warning',
  'backup-failed': 'error',
  decommission: 'warning',
  storm: 'warning',
  share: 'information',
  'setup-failed': 'error',
  'idle-stop': 'information',
  'dormant-delete': 'warning',
};

export function notificationSeverity(n: Pick<Notification, 'kind'>): MessageSeverity {
  return KIND_SEVERITY[n.kind] ?? 'information';
}

/** The one line a notification's message says: its title, and the first line of its body. */
export function notificationMessage(n: Notification): string {
  const title = plainText(n.title);
  const body = firstLine(n.body, 200);
  return body && body !== title ? `Leeward: ${title}: ${body}` : `Leeward: ${title}`;
}

export function announcementMessage(a: Announcement): string {
  return `Leeward: ${shorten(plainText(a.text), 400)}`;
}

export const DEFAULT_EXTEND_HOURS = 8;

/** A notification's actions, with an Extend button for an expiry warning that lacks one. */
export function notificationActions(n: Notification): Action[] {
  const actions = n.actions.filter((a) => a.kind !== 'link' || isWebLink(a.url));
  if (n.kind === 'expiry' && n.environment && !actions.some((a) => a.kind === 'extend')) {
    actions.unshift({
      kind: 'extend',
      label: 'Extend',
      environment: n.environment,
      command: null,
      url: null,
    });
  }
  return actions;
}

/** The hours of an extend action: from its terminal form (`--hours 24`), else the default. */
export function extendHours(action: Pick<Action, 'command'>): number {
  const match = /--hours[ =](\d+)/.exec(action.command ?? '');
  const hours = match ? Number(match[1]) : DEFAULT_EXTEND_HOURS;
  return hours > 0 && hours <= 24 * 365 ? hours : DEFAULT_EXTEND_HOURS;
}

/** The notifications shown in this window (the daemon sends each once; a restarted daemon
 * sends the unseen ones again until the fleet has been told they were seen). */
export class NotificationWatch {
  private readonly shown = new Set<number>();

  update(notifications: readonly Notification[]): Notification[] {
    const news = notifications.filter((n) => !this.shown.has(n.id));
    for (const n of news) this.shown.add(n.id);
    return news;
  }
}
