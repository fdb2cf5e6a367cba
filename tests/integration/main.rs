mod support;

mod source;
