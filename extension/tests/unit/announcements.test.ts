import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import {
  announcementBar,
  AnnouncementWatch,
  extendHours,
  firstLine,
  inertMarkdown,
  notificationActions,
  notificationMessage,
  NotificationWatch,
  plainText,
  SHOWN_KEY,
  undismissed,
} from '../../src/common/announcements';
import type { Announcement, Notification } from '../../src/protocol/generated';
import {
  ANNOUNCEMENTS_ITEM_ID,
  Announcements,
  DISMISS,
  Notifications,
} from '../../src/views/announcements';
import * as stub from '../support/vscode-stub';
import { commandContext, environment, FakeDaemon, MemoryMemento } from '../support/fixtures';

beforeEach(() => stub.reset());

function announcement(overrides: Partial<Announcement> = {}): Announcement {
  return {
    id: 1,
    text: 'North is drained **tonight** at 22:00.\nSave your work.',
    severity: 'warning',
    scope: { regions: ['north'], hosts: [], flavors: [], profiles: [], users: [] },
    startsAt: '2030-01-01T11:00:00Z',
    endsAt: null,
    actions: [],
    revision: 1,
    source: 'operator',
    createdBy: 'ops',
    createdAt: '2030-01-01T10:00:00Z',
    updatedAt: '2030-01-01T10:00:00Z',
    withdrawnAt: null,
    active: true,
    dismissed: false,
    environments: ['box'],
    ...overrides,
  };
}

function notification(overrides: Partial<Notification> = {}): Notification {
  return {
    id: 7,
    user: 'ada',
    kind: 'expiry',
    title: 'box expires in 1 hour',
    body: 'Extend it: `leeward extend box --hours 24`.',
    environment: 'box',
    actions: [],
    createdAt: '2030-01-01T11:00:00Z',
    seenAt: null,
    deliveries: [],
    ...overrides,
  };
}

const HOSTILE =
  '<script>alert("x")</script> <img src=x onerror=alert(1)> [run](command:workbench.action.quit) ![pixel](https://evil.test/p.png) &lt;b&gt;';

test('the most severe undismissed one leads; dismissed and inactive ones are not counted', () => {
  const list = [
    announcement({ id: 1, severity: 'info', text: 'Info first' }),
    announcement({ id: 2, severity: 'critical', text: '# Storm in north\nDetails' }),
    announcement({ id: 3, severity: 'critical', dismissed: true }),
    announcement({ id: 4, severity: 'warning', active: false }),
  ];
  assert.deepEqual(
    undismissed(list).map((a) => a.id),
    [2, 1],
  );
  const bar = announcementBar(list);
  assert.equal(bar.visible, true);
  assert.equal(bar.text, '$(error) 2 Storm in north');
  assert.equal(bar.background, 'error');
  assert.equal(announcementBar([list[2]!, list[3]!]).visible, false);
  assert.equal(firstLine('\n\n  **Bold** start `code` and more', 14), 'Bold start co…');
});

test('HTML, scripts, images and command links are inert in the tooltip and the message', () => {
  const md = inertMarkdown(HOSTILE);
  assert.doesNotMatch(md, /(^|[^\\])</, 'every < is escaped');
  assert.match(md, /\\<script\\>/);
  assert.doesNotMatch(md, /\]\(command:/, 'no command link');
  assert.doesNotMatch(md, /!\[/, 'no image');
  assert.match(md, /run \\\(command:workbench\.action\.quit\\\)/);
  assert.match(md, /\\&lt;b\\&gt;/, 'an entity shows as typed');
  assert.equal(
    inertMarkdown('[x][r]\n\n[r]: command:workbench.action.quit'),
    '\\[x\\]\\[r\\]\n\n\\[r\\]: command:workbench.action.quit',
    'no reference link either',
  );
  assert.equal(
    inertMarkdown('See [the runbook](https://wiki.test/drain) now'),
    'See [the runbook](https://wiki.test/drain) now',
    'an http(s) link stays a link',
  );
  const plain = plainText(HOSTILE);
  assert.doesNotMatch(plain, /\]\(/, 'no link left');
  assert.match(plain, /<script>alert\("x"\)<\/script>/, 'HTML is shown as text');
  assert.equal(
    plainText('Read [the runbook](https://wiki.test/x) or [this](command:rm)'),
    'Read the runbook (https://wiki.test/x) or this',
  );
  assert.equal(
    announcementBar([announcement({ text: 'a $(zap) icon' })]).text,
    '$(warning) a $\u200b(zap) icon',
  );
});

test('the status-bar item: inert MarkdownString tooltip, hidden when nothing is left', async () => {
  const daemon = new FakeDaemon({
    'leeward/announcements/dismiss': (params) => {
      const { id, revision } = params as { id: number; revision: number };
      return announcement({ id, revision, dismissed: true });
    },
  });
  const ctx = commandContext(daemon);
  const view = new Announcements(ctx, new MemoryMemento());
  const item = stub.recorded.statusBarItems.find((i) => i.id === ANNOUNCEMENTS_ITEM_ID);
  assert.ok(item);
  view.update([announcement({ text: HOSTILE })]);
  assert.equal(item.visible, true);
  const tooltip = item.tooltip as stub.MarkdownString;
  assert.equal(tooltip.isTrusted, false);
  assert.equal(tooltip.supportHtml, false);
  assert.equal(tooltip.supportThemeIcons, false);
  assert.match(tooltip.value, /\\<script\\>/);
  assert.equal(item.command?.command, 'leeward.showAnnouncements');
  await stub.settle();
  await view.dismiss(view.announcements[0]!);
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/announcements/dismiss', params: { id: 1, revision: 1 } },
  ]);
  assert.equal(item.visible, false, 'dismissed: nothing left to show');
});

test('each revision is shown once, as a notification of its severity, also after a reload', async () => {
  const memento = new MemoryMemento();
  const watch = new AnnouncementWatch(memento);
  const first = announcement();
  assert.deepEqual(
    watch.update([first]).map((a) => a.id),
    [1],
  );
  assert.deepEqual(watch.update([first]), []);
  assert.deepEqual(new AnnouncementWatch(memento).update([first]), [], 'a reload');
  assert.deepEqual(watch.update([{ ...first, dismissed: true }]), []);
  const edited = { ...first, text: 'New text', revision: 2 };
  assert.deepEqual(
    watch.update([edited]).map((a) => a.revision),
    [2],
    'a new revision is news',
  );
  assert.deepEqual(watch.update([]), []);
  assert.deepEqual(memento.get(SHOWN_KEY), { '1': 2 });
  watch.update([announcement({ id: 9 })]);
  assert.deepEqual(memento.get(SHOWN_KEY), { '9': 1 }, 'gone ones are forgotten');
});

test('an announcement: Dismiss dismisses; a link opens only if http(s); actions run commands', async () => {
  const daemon = new FakeDaemon({
    'leeward/announcements/dismiss': () => announcement({ dismissed: true }),
  });
  const ctx = commandContext(daemon);
  const view = new Announcements(ctx, new MemoryMemento());
  const actions: Announcement['actions'] = [
    {
      kind: 'link',
      label: 'Runbook',
      url: 'https://wiki.test/drain',
      environment: null,
      command: null,
    },
    { kind: 'link', label: 'Bad', url: 'javascript:alert(1)', environment: null, command: null },
    { kind: 'move', label: 'Move my devserver', url: null, environment: null, command: null },
    { kind: 'backup-now', label: 'Back up', url: null, environment: 'web', command: null },
    { kind: 'start', label: 'Start', url: null, environment: 'web', command: null },
  ];
  stub.answers.message.push('Runbook', 'Move my devserver', 'Back up', 'Start', 'Bad', DISMISS);
  view.update([announcement({ severity: 'critical', actions })]);
  await stub.settle();
  const [message] = stub.recorded.messages;
  assert.equal(message?.severity, 'error');
  assert.equal(message?.message, 'Leeward: North is drained tonight at 22:00. Save your work.');
  assert.deepEqual(message?.items, [
    'Runbook',
    'Bad',
    'Move my devserver',
    'Back up',
    'Start',
    DISMISS,
  ]);
  assert.deepEqual(stub.recorded.opened, ['https://wiki.test/drain']);
  for (let i = 0; i < 5; i++) await view.show(view.announcements[0]!);
  assert.deepEqual(stub.recorded.executed, [
    { command: 'leeward.move', args: ['box'] },
    { command: 'leeward.backUpNow', args: ['web'] },
    { command: 'leeward.connect', args: ['web'] },
  ]);
  assert.deepEqual(stub.recorded.opened, ['https://wiki.test/drain'], 'javascript: not opened');
  assert.ok(ctx.logged.some((l) => /only http\(s\) links open/.test(l)));
  assert.deepEqual(
    daemon.requests.map((r) => r.method),
    ['leeward/announcements/dismiss'],
  );
});

test('notifications: once each, by severity, reported seen; Extend is one click', async () => {
  const extended = environment({ expiresAt: '2030-01-02T12:00:00Z' });
  const daemon = new FakeDaemon({
    'leeward/notifications/seen': (params) => ({
      ids: (params as { ids: number[] }).ids,
      told: true,
    }),
    'leeward/environments/extend': () => extended,
  });
  const ctx = commandContext(daemon);
  const notifications = new Notifications(ctx);
  const expiry = notification({
    actions: [
      {
        kind: 'extend',
        label: 'Extend',
        url: null,
        environment: 'box',
        command: 'leeward extend box --hours 24',
      },
    ],
  });
  const failed = notification({
    id: 8,
    kind: 'backup-failed',
    title: 'Backup of box failed',
    body: '',
  });
  stub.answers.message.push('Extend', undefined);
  await notifications.receive([expiry, failed]);
  await notifications.receive([expiry]);
  await stub.settle();
  assert.deepEqual(
    stub.recorded.messages.slice(0, 2).map((m) => [m.severity, m.message, m.items]),
    [
      [
        'warning',
        'Leeward: box expires in 1 hour: Extend it: leeward extend box --hours 24.',
        ['Extend'],
      ],
      ['error', 'Leeward: Backup of box failed', []],
    ],
  );
  // Reported seen once shown, before any button is pressed.
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/notifications/seen', params: { ids: [7, 8] } },
    { method: 'leeward/environments/extend', params: { environment: 'box', hours: 24 } },
  ]);
  assert.equal(ctx.store.find('box')?.expiresAt, '2030-01-02T12:00:00Z');
  assert.match(stub.recorded.messages.at(-1)?.message ?? '', /^box now expires /);

  // A restarted daemon sends one again that the last could not report: reported, not shown.
  const flaky = new FakeDaemon({
    'leeward/notifications/seen': () => {
      throw new Error('The Leeward daemon is not running.');
    },
  });
  const again = new Notifications(commandContext(flaky));
  const shownBefore = stub.recorded.messages.length;
  await again.receive([failed]);
  flaky.handlers['leeward/notifications/seen'] = (params) => ({
    ids: (params as { ids: number[] }).ids,
    told: true,
  });
  await again.receive([failed]);
  await again.receive([failed]);
  assert.equal(stub.recorded.messages.length, shownBefore + 1, 'shown once');
  assert.deepEqual(
    flaky.requests.map((r) => r.params),
    [{ ids: [8] }, { ids: [8] }],
    'reported until the daemon took it, then no more',
  );
});

test('an expiry warning without actions still gets its Extend button; other helpers', () => {
  const actions = notificationActions(notification());
  assert.deepEqual(
    actions.map((a) => [a.kind, a.environment]),
    [['extend', 'box']],
  );
  assert.equal(extendHours(actions[0]!), 8);
  assert.equal(extendHours({ command: 'leeward extend box --hours 48' }), 48);
  assert.equal(extendHours({ command: 'leeward extend box --hours 99999999' }), 8);
  assert.equal(
    notificationMessage(notification({ body: 'box expires in 1 hour' })),
    'Leeward: box expires in 1 hour',
  );
  const watch = new NotificationWatch();
  assert.equal(watch.update([notification()]).length, 1);
  assert.equal(watch.update([notification(), notification({ id: 9 })]).length, 1);
});

test('Show Announcements offers the undismissed ones and shows the one picked', async () => {
  const ctx = commandContext(new FakeDaemon());
  const view = new Announcements(ctx, new MemoryMemento());
  view.update([
    announcement({ id: 1, dismissed: true }),
    announcement({ id: 2, text: 'Second one' }),
  ]);
  await stub.settle();
  stub.recorded.messages.length = 0;
  stub.answers.quickPick.push('Second one');
  await view.pick();
  assert.deepEqual(
    stub.recorded.quickPicks[0]?.items.map((i) => i.label),
    ['Second one'],
  );
  assert.equal(stub.recorded.messages[0]?.message, 'Leeward: Second one');
  view.update([]);
  await view.pick();
  assert.equal(stub.recorded.messages.at(-1)?.message, 'Leeward: no announcements now.');
});
