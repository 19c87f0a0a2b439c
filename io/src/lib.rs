pub mod monkey;
