/** The backups of each devserver as the tree shows them: asked of the daemon when a Backups
 * node is expanded, then kept until the devserver's backup status changes (the fleet's event
 * when a backup starts or ends) or, while one runs, for a few seconds, so that its percentage
 * moves. */
import type { BackupList, Environment } from '../protocol/generated';
import { Emitter, type Disposable } from './events';

/** How long a list with a running backup is kept before it is asked for again. */
export const RUNNING_REFRESH_MS = 5000;

interface Entry {
  /** The environment's `backup` status the list was fetched under. */
  key: string;
  at: number;
  list: Promise<BackupList>;
  running: boolean;
}

export class BackupLists implements Disposable {
  private readonly entries = new Map<string, Entry>();
  private readonly changed = new Emitter<void>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** Fires when a shown list is worth asking for again (a backup in it runs). */
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly fetch: (environment: string) => Promise<BackupList>,
    private readonly now: () => number = Date.now,
    private readonly runningRefreshMs = RUNNING_REFRESH_MS,
  ) {}

  /** The devserver's backups, newest first (rejects with the daemon's sentence). */
  list(environment: Environment): Promise<BackupList> {
    const key = JSON.stringify(environment.backup);
    const known = this.entries.get(environment.id);
    if (
      known !== undefined &&
      known.key === key &&
      !(known.running && this.now() - known.at >= this.runningRefreshMs)
    ) {
      return known.list;
    }
    const entry: Entry = {
      key,
      at: this.now(),
      list: this.fetch(environment.name),
      running: false,
    };
    this.entries.set(environment.id, entry);
    entry.list.then(
      (list) => {
        entry.running = list.backups.some((b) => b.state === 'running');
        if (entry.running) this.later();
      },
      () => {
        // Not kept: the next expansion asks again.
        if (this.entries.get(environment.id) === entry) this.entries.delete(environment.id);
      },
    );
    return entry.list;
  }

  /** Asked for again next time (after a backup or restore from the editor). */
  forget(environmentId?: string): void {
    if (environmentId === undefined) this.entries.clear();
    else this.entries.delete(environmentId);
    this.changed.fire();
  }

  private later(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.changed.fire();
    }, this.runningRefreshMs);
  }

  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.changed.dispose();
  }
}
