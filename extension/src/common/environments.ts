/** What the extension knows of the user's environments: the daemon's last list, the health of
 * each, the account, and which one was used last. Views and commands read it; the daemon's
 * notifications write it. */
import type {
  DaemonStatus,
  Environment,
  EnvironmentsResult,
  HealthRecord,
} from '../protocol/generated';
import { Emitter } from './events';

/** States in which an environment is shown; `warm` ones are the fleet's, `deleted` ones gone.
 * A migrating one is still the user's (its sessions ride through), and a stopped one starts
 * again on its next connection. */
const SHOWN = new Set<Environment['state']>([
  'provisioning',
  'running',
  'migrating',
  'stopped',
  'deleting',
  'failed',
]);

/** Where the last-used environment's name is kept (VS Code's globalState in the extension). */
export interface Memento {
  get<T>(key: string): T | undefined;
  update(key: string, value: unknown): PromiseLike<void>;
}

export const LAST_USED_KEY = 'leeward.lastEnvironment';

export class EnvironmentStore {
  private result: EnvironmentsResult | undefined;
  private readonly health = new Map<string, HealthRecord>();
  private status: DaemonStatus | undefined;
  private readonly changed = new Emitter<void>();

  /** Fires after any change: list, health, account or last used. */
  readonly onDidChange = this.changed.event;

  constructor(private readonly memento: Memento) {}

  /** Environments to show, by name. */
  get environments(): Environment[] {
    const all = this.result?.environments ?? [];
    return all.filter((e) => SHOWN.has(e.state)).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The last list, as the daemon gave it (with `stale` and its reason). */
  get list(): EnvironmentsResult | undefined {
    return this.result;
  }

  get account(): DaemonStatus | undefined {
    return this.status;
  }

  get signedIn(): boolean {
    return this.status !== undefined && this.status.fleet !== 'signedOut';
  }

  get lastUsed(): string | undefined {
    return this.memento.get<string>(LAST_USED_KEY);
  }

  setList(result: EnvironmentsResult): void {
    this.result = result;
    const live = new Set(result.environments.map((e) => e.id));
    for (const id of this.health.keys()) if (!live.has(id)) this.health.delete(id);
    this.changed.fire();
  }

  /** An environment the daemon returned (create, extend, delete): replaces its old copy. */
  upsert(environment: Environment): void {
    const result = this.result ?? { environments: [], stale: false, fetchedAt: null, reason: '' };
    const others = result.environments.filter((e) => e.id !== environment.id);
    this.result = { ...result, environments: [...others, environment] };
    this.changed.fire();
  }

  setHealth(record: HealthRecord): void {
    this.health.set(record.environmentId, record);
    this.changed.fire();
  }

  setHealthRecords(records: HealthRecord[]): void {
    this.health.clear();
    for (const record of records) this.health.set(record.environmentId, record);
    this.changed.fire();
  }

  setAccount(status: DaemonStatus | undefined): void {
    this.status = status;
    this.changed.fire();
  }

  healthOf(environment: Environment): HealthRecord | undefined {
    return this.health.get(environment.id);
  }

  /** By id, name, or ssh alias (the name or the fully qualified name). */
  find(reference: string): Environment | undefined {
    return this.environments.find(
      (e) => e.id === reference || e.name === reference || e.fqdn === reference,
    );
  }

  async rememberLastUsed(name: string): Promise<void> {
    await this.memento.update(LAST_USED_KEY, name);
    this.changed.fire();
  }

  /** Forget everything the daemon said (it stopped); the last used name stays. */
  clear(): void {
    this.result = undefined;
    this.health.clear();
    this.status = undefined;
    this.changed.fire();
  }

  dispose(): void {
    this.changed.dispose();
  }
}
