import type { Knex } from 'knex';

export class SettingsRepo {
  constructor(private readonly db: Knex) {}

  async get(key: string): Promise<string | undefined> {
    const row = await this.db('settings').where({ key }).first('value');
    return row?.value;
  }

  /** Sets a value only if the key is absent; returns the value that is stored afterwards. */
  async setIfAbsent(key: string, value: string): Promise<string> {
    await this.db('settings').insert({ key, value }).onConflict('key').ignore();
    return (await this.get(key))!;
  }
}
