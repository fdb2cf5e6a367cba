mod support;

mod health;
mod runner;
