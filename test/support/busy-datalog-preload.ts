// `--import` this (after tsx) to start a process with busyDatalog() on: every Datalog evaluation overruns its time limit.
import { busyDatalog } from './busy-datalog.js';

busyDatalog();
